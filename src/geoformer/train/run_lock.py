"""One writer per run folder: an exclusive, non-blocking ``flock`` on ``<folder>/.lock``.

The lock dies with its process (a SIGKILL releases it), so a stale lock never blocks a later run; a second
writer gets one line naming the holder's pid. Temporary files of killed atomic writes are removed on entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from geoformer.errors import GeoformerError

_HELD: set[str] = set()  # folders this process holds (re-entrant within one process)


@contextlib.contextmanager
def run_lock(folder: Path, what: str = "run") -> Iterator[None]:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GeoformerError(f"--out {folder} exists and is not a folder")
    key = str(folder.resolve())
    if key in _HELD:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise GeoformerError(
                f"{folder} is in use by another geoformer {what} (pid {holder}); wait for it or use another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        from geoformer.train import checkpoint

        checkpoint.remove_stale_temporaries(folder)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        f.close()

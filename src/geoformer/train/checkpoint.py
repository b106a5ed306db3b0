"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename over the target.

A crash or Ctrl-C mid-write therefore leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from geoformer.errors import GeoformerError

FORMAT = "geoformer-ckpt-1"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files a killed :func:`atomic_write_bytes` left in ``folder`` (``.<name>.<random>.tmp``);
    call only while holding the folder's lock (no other writer can be mid-write)."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save(path: Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a geoformer checkpoint; anything else is a one-line :class:`GeoformerError`."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise GeoformerError(f"no checkpoint at {path}")
    try:
        # weights_only=True: tensors, numbers, strings and plain containers only; a pickled callable in a file
        # someone hands over is refused instead of run
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # garbage bytes, not a disallowed object
            raise GeoformerError(f"cannot read checkpoint {path}: corrupt or not a torch file (UnpicklingError)") from None
        raise GeoformerError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain containers, which could "
            "run code (geoformer never writes such checkpoints)"
        ) from None
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise GeoformerError(
            f"cannot read checkpoint {path}: corrupt or not a torch file ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GeoformerError(f"{path} is not a geoformer checkpoint (format {FORMAT} expected)")
    return state

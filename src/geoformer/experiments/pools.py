"""Worker processes that stop with their parent, and a pool's futures consumed as they finish, with the rest
cancelled as soon as the caller stops."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait

# set for `claims --jobs` children (plain subprocesses, not pool workers): they call exit_with_parent at start
EXIT_WITH_PARENT_ENV = "GEOFORMER_EXIT_WITH_PARENT"


def exit_with_parent(poll_s: float = 0.5) -> None:
    """End this process (exit code 1) soon after its parent dies. A pool worker's parent killed by a signal
    runs no cleanup, so without this its workers go on training (reparented to init) and can write into the
    same run folders as the workers of a rerun. A daemon thread compares ``os.getppid()`` with its value now."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def completed(futures: Iterable[Future]) -> Iterator[Future]:
    """Yield each future once it is done (a failed one as soon as it fails). When the caller leaves the loop,
    by a raise on a failed future or otherwise, every future not yet started is cancelled, so the pool's
    shutdown does not run the remaining work first."""
    pending = set(futures)
    try:
        while pending:
            # FIRST_COMPLETED, not FIRST_EXCEPTION: the latter returns only when all are done (or one failed),
            # so nothing was written (and no progress shown) until the very last task ended
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from done
    finally:
        for f in pending:
            f.cancel()

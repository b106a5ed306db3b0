"""Futures of a process pool consumed as they finish, with the rest cancelled as soon as the caller stops."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait


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

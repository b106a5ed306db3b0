"""experiments.pools.completed: futures come back as each finishes, and leaving early cancels the rest."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from geoformer.experiments.pools import completed


def test_each_future_is_yielded_when_it_finishes_not_when_all_have():
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        fast = pool.submit(lambda: "fast")
        slow = pool.submit(lambda: release.wait(30) and "slow")
        it = completed([slow, fast])
        first = next(it)  # would block for 30 s (until the slow one ends) if it waited for all
        assert first is fast and not slow.done()
        release.set()
        assert [f.result() for f in it] == ["slow"]


def test_a_failure_surfaces_at_once_and_cancels_the_tasks_not_started():
    gate = threading.Event()

    def boom():
        raise ValueError("bad task")

    with ThreadPoolExecutor(1) as pool:
        futures = [pool.submit(boom), *[pool.submit(gate.wait, 30) for _ in range(3)]]
        with pytest.raises(ValueError, match="bad task"):
            for f in completed(futures):
                f.result()
        assert all(f.cancelled() for f in futures[2:])
        gate.set()

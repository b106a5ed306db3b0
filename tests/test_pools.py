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


PARENT = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from geoformer.experiments.pools import exit_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=exit_with_parent, initargs=(0.1,))
    pool.submit(os.getpid).result()  # the worker is up
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan stays one where PID 1 does not reap, as in some containers)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: kill(0) is all we can tell


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    """A compare whose process is killed (SIGKILL runs no cleanup) must not leave workers training on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(PARENT, encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # alive while its parent is
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _running(worker):
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its parent by 10 s")
    finally:
        parent.kill()

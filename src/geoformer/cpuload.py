"""How busy the machine was: the cores *other* processes kept busy while a block of code ran (Linux /proc/stat).

Benchmarks record it beside their timings, and the trainer beside every run, so a reader can tell a slow number
from a loaded machine.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

NOISY_CORES = 0.1  # background load above which results are flagged as unreliable


def _busy_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (Linux ``/proc/stat``), else None."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, *rest = (int(v) for v in fields)
    steal = rest[0] if rest else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


_credited = 0.0  # CPU seconds of work done for this process by processes that are not its children


def credit_cpu(seconds: float) -> None:
    """Count ``seconds`` of CPU spent on this process's behalf by a process that is not its child (a child of a
    multiprocessing forkserver is the forkserver's child, so ``RUSAGE_CHILDREN`` never sees it) as this
    process's own time, so :class:`BackgroundLoad` does not report it as other processes' load."""
    global _credited
    _credited += max(0.0, float(seconds))


def cpu_seconds_self() -> float:
    """User plus system CPU seconds of the calling process alone (a forked child starts from zero)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _own_seconds() -> float:
    """CPU seconds of this process, its finished children, and the work credited by :func:`credit_cpu`."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds_self() + kids.ru_utime + kids.ru_stime + _credited


class BackgroundLoad:
    """Context manager: how many cores *other* processes kept busy, on average, while the block ran.

    A benchmark on a shared machine is only as good as its quiet; this number goes into the results so a
    reader can tell (0.0 = nothing else ran; ``None`` where ``/proc/stat`` does not exist).
    """

    def __enter__(self) -> BackgroundLoad:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_seconds(), _own_seconds()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self.t0
        busy = _busy_seconds()
        if busy is not None and self.busy0 is not None and wall > 0:
            others = (busy - self.busy0) - (_own_seconds() - self.own0)
            self.cores = round(max(0.0, others) / wall, 3)
        self.wall_s = round(wall, 2)

    def as_dict(self) -> dict[str, float | None]:
        return {"other_processes_cores_busy": self.cores, "wall_s": self.wall_s}


def load_note(load: dict[str, Any]) -> str:
    """A sentence about the background load recorded by :class:`BackgroundLoad`."""
    cores = load.get("other_processes_cores_busy")
    if cores is None:
        return ""
    note = f" Other processes kept {cores:.2f} cores busy on average during the {load['wall_s']:.0f} s run."
    if cores > NOISY_CORES:
        note += " WARNING: the machine was not quiet; timings are unreliable, rerun when it is idle."
    return note

"""Pieces shared by the benchmarks: machine description, device sync, robust summaries, output files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from geoformer.errors import GeoformerError


def cpu_name() -> str:
    """The CPU model string (``/proc/cpuinfo`` on Linux, else whatever ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to compare numbers across machines."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
    }


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


def _own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings cover the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, interquartile range, min and max of ``values`` (IQR is 0 for fewer than 2 values)."""
    vals = sorted(values)
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else (vals[0],) * 3
    return {"median": statistics.median(vals), "iqr": q3 - q1, "q1": q1, "q3": q3, "min": vals[0], "max": vals[-1]}


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or the denominator is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` if it is at least ``minimum``, else a one-line error naming the flag."""
    if value < minimum:
        raise GeoformerError(f"{name} must be >= {minimum}, got {value}")
    return value


def prepare_out(out: str | Path) -> Path:
    """The output folder, created if needed (benchmark files in it are overwritten)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A GitHub markdown table: the first ``left`` columns left-aligned (labels), the rest right (numbers)."""
    align = [":---" if i < left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)

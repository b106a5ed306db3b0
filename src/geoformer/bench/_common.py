"""Pieces shared by the benchmarks: machine description, device sync, robust summaries, output files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from geoformer.cpuload import NOISY_CORES, BackgroundLoad, load_note  # noqa: F401  (the benchmarks' names)
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

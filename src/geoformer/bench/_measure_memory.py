"""Peak CPU memory of one attention forward+backward, measured in a fresh process.

Run by :func:`geoformer.bench.attention.cpu_peak_mb` as
``python -m geoformer.bench._measure_memory '<json spec>'``; prints one JSON line,
``{"peak_mb": ...}`` or ``{"error": "..."}``.

The peak is the resident-set high-water mark above a baseline taken after importing torch, building the
module and the input, and one warm-up call at a tiny length (lazy kernel and allocator set-up). On Linux
the high-water mark is reset to the current RSS first (``/proc/self/clear_refs``) and read from
``VmHWM``: ``getrusage(RUSAGE_SELF).ru_maxrss`` cannot be used there, because a process started with
vfork+exec inherits its parent's peak, which hides anything smaller. Elsewhere ``ru_maxrss`` is the
fallback (valid when the parent's peak is below the child's baseline).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    text = _STATUS.read_text(encoding="ascii")
    return int(text.split(f"{field}:", 1)[1].split()[0])


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5", encoding="ascii")
        _status_kib("VmHWM")
        return True
    except (OSError, IndexError, ValueError):
        return False


def peak_mib(precise: bool) -> float:
    """The RSS high-water mark in MiB (``VmHWM`` when ``precise``, else ``ru_maxrss``)."""
    if precise:
        return _status_kib("VmHWM") / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def measure(spec: dict) -> dict:
    """Build the case in ``spec`` (see :func:`geoformer.bench.attention.case_spec`) and measure its peak."""
    import torch

    from geoformer.bench.attention import build_case, fwd_bwd, zero_grads

    torch.set_num_threads(int(spec["threads"]))
    module, x = build_case(spec, torch.device("cpu"))
    small = x[:, : min(8, x.size(1))].detach().requires_grad_()
    fwd_bwd(module, small)  # warm-up: lazy initialisation is not the kind's memory
    zero_grads(module, small)
    del small
    precise = reset_peak()
    base = peak_mib(precise)
    fwd_bwd(module, x)
    return {
        "peak_mb": max(0.0, peak_mib(precise) - base),
        "baseline_mb": base,
        "method": "VmHWM" if precise else "ru_maxrss",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = measure(json.loads(argv[0]))
        code = 0
    except Exception as e:  # noqa: BLE001 - any failure is a result to record, not a crash
        result, code = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}, 1
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

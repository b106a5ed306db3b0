"""Peak CPU memory of one attention forward+backward, measured in a fresh process.

Run by :func:`geoformer.bench.attention.cpu_peak_mb` through :func:`measure_forked`: each case in a child
forked from a forkserver that has torch and the benchmark imported (a fresh ``python -m`` per case spent about
2 s of its time importing torch, 70 of the default benchmark's 122 s). Where no forkserver exists, or
``GEOFORMER_MEMORY_EXEC=1``, ``python -m geoformer.bench._measure_memory '<json spec>'`` does the same and prints
one JSON line, ``{"peak_mb": ...}`` or ``{"error": "..."}``.

The peak is the resident-set high-water mark above a baseline taken after importing torch, building the
module and the input, and one warm-up call at a tiny length (lazy kernel and allocator set-up). On Linux
the high-water mark is reset to the current RSS first (``/proc/self/clear_refs``) and read from
``VmHWM``: ``getrusage(RUSAGE_SELF).ru_maxrss`` cannot be used there, because a process started with
vfork+exec inherits its parent's peak, which hides anything smaller. Elsewhere ``ru_maxrss`` is the
fallback (valid when the parent's peak is below the child's baseline).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import resource
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from geoformer.bench.cases import build_case, fwd_bwd, zero_grads
from geoformer.cpuload import cpu_seconds_self, credit_cpu
from geoformer.errors import error_line

# glibc's M_MMAP_THRESHOLD: a fixed threshold returns large freed blocks to the OS, so the warm-up cannot
# pre-pay the peak (the exec path sets it through the MALLOC_MMAP_THRESHOLD_ variable instead)
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3

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


def _set_mmap_threshold() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator's defaults
        pass


def _child(spec: dict, conn) -> None:
    _set_mmap_threshold()
    try:
        result = measure(spec)
    except Exception as e:  # noqa: BLE001 - any failure is a result to record, not a crash
        result = {"error": error_line(e)}
    result["cpu_s"] = cpu_seconds_self()  # the forkserver's child: the parent's RUSAGE_CHILDREN never sees it
    conn.send(result)
    conn.close()


@lru_cache(maxsize=1)
def forkserver() -> Any | None:
    """The forkserver context (torch and the benchmark preloaded), or None where there is none."""
    if "forkserver" not in mp.get_all_start_methods():
        return None
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "geoformer.bench.cases", __name__])
    return ctx


def use_forkserver() -> bool:
    """Whether memory is measured in forkserver children (there is a forkserver and ``GEOFORMER_MEMORY_EXEC``
    is not ``1``), rather than in a fresh ``python -m`` per case."""
    return forkserver() is not None and os.environ.get("GEOFORMER_MEMORY_EXEC") != "1"


def start_forkserver() -> bool:
    """Start the forkserver now (it imports torch, about 2 CPU-s), so that a benchmark that calls this before
    its timed block does not count the start-up as the machine's background load; False where it is not used."""
    if not use_forkserver():
        return False
    from multiprocessing import forkserver as _fs

    _fs.ensure_running()
    return True


def measure_forked(spec: dict, timeout_s: float) -> dict:
    """:func:`measure` in a child of the forkserver: ``{"peak_mb", ...}``, or ``{"error": ...}`` (the case
    failed, the child died, or it ran past ``timeout_s`` and was killed). The child's CPU seconds are credited
    to this process (:func:`geoformer.cpuload.credit_cpu`): it is not this process's child, so without that a
    :class:`~geoformer.cpuload.BackgroundLoad` around the benchmark counted them as other processes' load
    (a child killed or dead before it answers is not credited)."""
    ctx = forkserver()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            return {"error": f"timed out after {timeout_s:g} s"}
        result = recv.recv()
        credit_cpu(result.pop("cpu_s", 0.0))
        return result
    except (EOFError, OSError):
        proc.join(5)
        return {"error": f"the measuring process died (exit status {proc.exitcode})"}
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = measure(json.loads(argv[0]))
        code = 0
    except Exception as e:  # noqa: BLE001 - any failure is a result to record, not a crash
        result, code = {"error": error_line(e)}, 1
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

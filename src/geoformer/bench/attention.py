"""Attention kinds head to head: forward+backward time and peak memory against ``sdpa``.

For every kind and sequence length the attention module is built alone (``n_embd``, ``n_head``,
``block_size = seq``) and ``module(x).sum().backward()`` is timed (``x`` requires grad): the median
over ``repeats`` calls after ``warmup`` discarded ones, with the IQR and min/max as the spread. At each
length the kinds take turns call by call (in a rotating order), so background load hits them alike.
Peak memory is ``torch.cuda.max_memory_allocated`` above the resting allocation on CUDA, and on CPU the
RSS high-water mark of one call in a fresh subprocess (see :mod:`geoformer.bench._measure_memory`).
Every number is also given as a ratio to ``sdpa`` measured in the same run, which is always included.

>>> s = AttentionBenchSettings(seqs=[64], kinds=["naive"], repeats=3, memory=False)  # doctest: +SKIP
>>> result = run_attention_bench(s)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import geoformer
from geoformer import attention
from geoformer.bench import _measure_memory
from geoformer.bench._common import (
    BackgroundLoad,
    fmt,
    load_note,
    machine_info,
    markdown_table,
    prepare_out,
    ratio,
    spread,
    sync,
    write_json,
)
from geoformer.bench.cases import DTYPES, build_case, fwd_bwd, zero_grads
from geoformer.config import parse_value
from geoformer.errors import GeoformerError, error_line

BASELINE = "sdpa"
MEMORY_TIMEOUT_S = 900


@dataclass
class AttentionBenchSettings:
    """What to measure; ``kinds`` is completed with ``sdpa`` (first) by :func:`resolve_kinds`."""

    seqs: list[int]
    kinds: list[str] = field(default_factory=list)  # empty = every registered kind
    batch: int = 4
    embd: int = 128
    heads: int = 4
    repeats: int = 10
    warmup: int = 3
    dtype: str = "float32"
    device: str = "auto"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> that kind's options
    memory: bool = True
    seed: int = 0
    # which of a kind's companions are timed beside it: names, or ("all",); the default leaves out the
    # explicit pairwise paths, which take seconds per call (ask with --companions floor,pairwise or all)
    companions: tuple[str, ...] = ("floor",)


# ---------------------------------------------------------------------------------------------- parsing
def parse_seq(text: str) -> list[int]:
    """``"128,256"`` -> ``[128, 256]`` (sorted, unique); anything else is a one-line error."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        seqs = sorted({int(p) for p in parts})
    except ValueError:
        raise GeoformerError(f"--seq expects comma-separated positive integers, got {text!r}") from None
    if not seqs or seqs[0] < 1:
        raise GeoformerError(f"--seq expects comma-separated positive integers, got {text!r}")
    return seqs


def parse_kinds(text: str | None) -> list[str]:
    """``"naive,local"`` -> the kinds, each checked against the registry (empty/None = all)."""
    if not text:
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for k in kinds:
        attention.get(k)  # unknown -> GeoformerError listing the known kinds
    return list(dict.fromkeys(kinds))


def parse_attn_sets(items: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """``["local.window=16", "topk.k=4"]`` -> ``{"local": {"window": 16}, "topk": {"k": 4}}``, type-checked."""
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        kind, dot, name = key.strip().partition(".")
        if not (sep and dot and kind and name):
            raise GeoformerError(f"--set-attn expects kind.key=value, got {item!r}")
        attention.get(kind)
        options.setdefault(kind, {})[name] = parse_value(value.strip())
    for kind, opts in options.items():
        attention.make_options(kind, opts)  # unknown key / wrong type -> one line
        # a value the kind rejects (a window of -1) is an input error, not a failed measurement: build it once
        attention.build(kind, 16, 2, block_size=16, options=opts)
    return options


def resolve_kinds(settings: AttentionBenchSettings) -> list[str]:
    """The kinds to measure: the requested ones (default all), with ``sdpa`` always first."""
    # the control kinds (no selection: none / uniform / self_only) only when named
    kinds = list(settings.kinds) or [k for k in attention.names() if not getattr(attention.get(k), "control", False)]
    for k in kinds:
        attention.get(k)
    extra = sorted(set(settings.options) - set(kinds))
    if extra:
        raise GeoformerError(f"--set-attn names {extra[0]!r}, which is not benchmarked here (--kinds)")
    return [BASELINE] + [k for k in kinds if k != BASELINE]


def check_settings(s: AttentionBenchSettings) -> None:
    """One-line errors for values that cannot be measured."""
    checks = [
        (s.batch >= 1, f"--batch must be >= 1, got {s.batch}"),
        (
            s.heads >= 1 and s.embd >= 1 and s.embd % s.heads == 0,
            f"--embd ({s.embd}) must be a positive multiple of --heads ({s.heads})",
        ),
        (s.repeats >= 1, f"--repeats must be >= 1, got {s.repeats}"),
        (s.warmup >= 0, f"--warmup must be >= 0, got {s.warmup}"),
        (s.dtype in DTYPES, f"unknown --dtype {s.dtype!r}; known: {', '.join(DTYPES)}"),
        (bool(s.seqs) and min(s.seqs) >= 1, "--seq needs at least one positive length"),
    ]
    for ok, msg in checks:
        if not ok:
            raise GeoformerError(msg)


# ---------------------------------------------------------------------------------------------- one case
def case_spec(s: AttentionBenchSettings, kind: str, seq: int) -> dict[str, Any]:
    """Everything needed to rebuild one (kind, seq) case, as plain JSON (for the memory subprocess)."""
    return {
        "kind": kind,
        "seq": seq,
        "batch": s.batch,
        "embd": s.embd,
        "heads": s.heads,
        "dtype": s.dtype,
        "options": s.options.get(kind, {}),
        "seed": s.seed,
        "threads": torch.get_num_threads(),
    }


def time_call(module: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Milliseconds of one forward+backward call."""
    zero_grads(module, x)
    sync(device)
    t0 = time.perf_counter()
    fwd_bwd(module, x)
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def time_closure(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one call of a companion closure (it zeroes its own grads)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def companions(
    module: torch.nn.Module, x: torch.Tensor, wanted: Sequence[str] = ("all",)
) -> dict[str, Callable[[], None]]:
    """A kind's reference workloads timed beside it, ``{name: closure}``, from its optional
    ``bench_companions(x)`` method (``gauge_kl``: ``floor``, its SDPA limit; ``pairwise``, its explicit path),
    kept to the names in ``wanted`` (``("all",)``: every one; ``()``: none)."""
    fn = getattr(module, "bench_companions", None)
    found = dict(fn(x)) if callable(fn) else {}
    return found if "all" in wanted else {k: v for k, v in found.items() if k in wanted}


def parse_companions(text: str | None) -> tuple[str, ...]:
    """``--companions``: ``"floor,pairwise"``, ``"all"`` or ``"none"``; None keeps the default (``floor``)."""
    if text is None:
        return AttentionBenchSettings.companions
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    if not names or any(not n.isidentifier() for n in names):
        raise GeoformerError(f"--companions expects comma-separated names, all or none, got {text!r}")
    if "none" in names:
        if len(names) > 1:
            raise GeoformerError(f"--companions none cannot be combined with other names, got {text!r}")
        return ()
    return names


def time_round_robin(
    cases: dict[str, tuple[torch.nn.Module, torch.Tensor]],
    errors: dict[str, str],
    repeats: int,
    warmup: int,
    device: torch.device,
    extra: dict[str, Callable[[], None]] | None = None,
    solo: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[float]]:
    """Per kind (and per ``extra`` / ``solo`` closure), the milliseconds of ``repeats`` calls after ``warmup``
    untimed ones.

    The kinds and ``extra`` take turns, one call each per round, and the order rotates every round: a burst
    of background load or a slow drift then hits every kind alike instead of whichever ran at that moment.
    ``solo`` closures (a kind's heavy companions, such as gauge_kl's pairwise path, which allocates a GiB a
    call) run afterwards, each on its own: interleaved, they evict the caches and the allocator's pages the
    others run in (gauge_kl measured 2.57x its floor at N = 256 with pairwise between its calls, 1.5x
    without). A kind whose call raises gets its error in ``errors`` and leaves the rotation.
    """
    calls: dict[str, Callable[[], float]] = {k: (lambda c=c: time_call(*c, device)) for k, c in cases.items()}
    calls.update({k: (lambda f=f: time_closure(f, device)) for k, f in (extra or {}).items()})
    times: dict[str, list[float]] = {k: [] for k in [*calls, *(solo or {})]}

    def one(name: str, call: Callable[[], float], keep: bool) -> None:
        try:
            ms = call()
        except Exception as e:  # noqa: BLE001 - recorded per (kind, seq); the run goes on
            errors[name] = error_line(e)
            return
        if keep:
            times[name].append(ms)

    names = list(calls)
    for i in range(warmup + repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            if name not in errors:
                one(name, calls[name], i >= warmup)
    for name, f in (solo or {}).items():
        for i in range(warmup + repeats):
            if name not in errors:
                one(name, lambda f=f: time_closure(f, device), i >= warmup)
    return times


def cuda_peak_mb(module: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Peak CUDA allocation of one forward+backward above what is allocated before it."""
    zero_grads(module, x)
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fwd_bwd(module, x)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def cpu_peak_mb(spec: dict[str, Any]) -> tuple[float | None, str | None]:
    """``(peak_mb, None)`` measured in a fresh process (a forkserver child, see
    :mod:`geoformer.bench._measure_memory`), or ``(None, error)``."""
    if _measure_memory.use_forkserver():
        result = _measure_memory.measure_forked(spec, MEMORY_TIMEOUT_S)
        if "error" in result:
            return None, f"memory: {result['error']}"
        return float(result["peak_mb"]), None
    return _exec_peak_mb(spec)


def _exec_peak_mb(spec: dict[str, Any]) -> tuple[float | None, str | None]:
    """``(peak_mb, None)`` from a fresh ``python -m geoformer.bench._measure_memory``, or ``(None, error)``."""
    env = dict(os.environ)
    src = str(Path(geoformer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # a fixed mmap threshold returns large freed blocks to the OS, so the warm-up cannot pre-pay the peak
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(_measure_memory.MMAP_THRESHOLD))
    cmd = [sys.executable, "-m", "geoformer.bench._measure_memory", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=MEMORY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"memory: timed out after {MEMORY_TIMEOUT_S} s"
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return None, f"memory: {tail}"
    if "error" in result:
        return None, f"memory: {result['error']}"
    return float(result["peak_mb"]), None


def _row(kind: str, seq: int, times: list[float] | None, error: str | None) -> dict[str, Any]:
    stats = spread(times) if times and error is None else {}
    return {
        "kind": kind,
        "seq": seq,
        "median_ms": stats.get("median"),
        "iqr_ms": stats.get("iqr"),
        "q1_ms": stats.get("q1"),
        "q3_ms": stats.get("q3"),
        "min_ms": stats.get("min"),
        "max_ms": stats.get("max"),
        "peak_mb": None,
        "error": error,
    }


def measure_length(
    s: AttentionBenchSettings, kinds: list[str], seq: int, device: torch.device
) -> list[dict[str, Any]]:
    """One row per kind at length ``seq``; failures (OOM, a kind rejecting a size) become ``error``s."""
    cases: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}
    errors: dict[str, str] = {}
    for kind in kinds:
        try:
            cases[kind] = build_case(case_spec(s, kind, seq), device)
        except Exception as e:  # noqa: BLE001
            errors[kind] = error_line(e)
    extra: dict[str, Callable[[], None]] = {}
    solo: dict[str, Callable[[], None]] = {}
    for kind, (module, x) in cases.items():
        try:
            heavy = set(getattr(module, "BENCH_SOLO", ()))
            for name, fn in companions(module, x, s.companions).items():
                (solo if name in heavy else extra)[f"{kind}/{name}"] = fn
        except Exception as e:  # noqa: BLE001 - a companion that cannot be built is noted, the kind still runs
            errors[f"{kind}/companions"] = error_line(e)
    times = time_round_robin(cases, errors, s.repeats, s.warmup, device, extra, solo)
    rows = [_row(kind, seq, times.get(kind), errors.get(kind)) for kind in kinds]
    for row in rows:
        row["companions"] = {}
        for name in [n for n in dict.fromkeys([*extra, *solo, *errors]) if n.startswith(row["kind"] + "/")]:
            comp, err = name.split("/", 1)[1], errors.get(name)
            t = spread(times[name]) if name in times and times[name] and err is None else {}
            row["companions"][comp] = {"median_ms": t.get("median"), "iqr_ms": t.get("iqr"), "error": err}
            if t:
                row[f"ratio_time_vs_{comp}"] = ratio(row["median_ms"], t.get("median"))
    for row in rows:
        if not s.memory or row["error"] is not None:
            continue
        if device.type == "cuda":
            try:
                row["peak_mb"] = cuda_peak_mb(*cases[row["kind"]], device)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"memory: {error_line(e)}"
        else:
            row["peak_mb"], row["error"] = cpu_peak_mb(case_spec(s, row["kind"], seq))
    del cases
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio_time_vs_sdpa`` and ``ratio_mem_vs_sdpa`` against the sdpa row of the same length."""
    base = {r["seq"]: r for r in rows if r["kind"] == BASELINE}
    for r in rows:
        b = base.get(r["seq"], {})
        r["ratio_time_vs_sdpa"] = ratio(r["median_ms"], b.get("median_ms"))
        r["ratio_mem_vs_sdpa"] = ratio(r["peak_mb"], b.get("peak_mb"))


# ---------------------------------------------------------------------------------------------- the run
def run_attention_bench(s: AttentionBenchSettings, *, log=None) -> dict[str, Any]:
    """Measure every (kind, seq); returns ``{"machine", "settings", "rows"}`` (rows sorted by kind, seq)."""
    from geoformer.train.trainer import pick_device

    check_settings(s)
    kinds = resolve_kinds(s)
    device = pick_device(s.device)
    rows = []
    if s.memory and device.type == "cpu":
        _measure_memory.start_forkserver()  # its torch import is set-up, not the machine's background load
    with BackgroundLoad() as load:
        for seq in s.seqs:
            rows += measure_length(s, kinds, seq, device)
            if log is not None:
                for row in rows[-len(kinds) :]:
                    log(_progress_line(row))
    add_ratios(rows)
    order = {k: i for i, k in enumerate(kinds)}
    rows.sort(key=lambda r: (order[r["kind"]], r["seq"]))
    settings = {**asdict(s), "kinds": kinds, "memory_method": _memory_method(s, device)}
    return {
        "machine": machine_info(device),
        "settings": settings,
        "background_load": load.as_dict(),
        "rows": rows,
    }


def _memory_method(s: AttentionBenchSettings, device: torch.device) -> str:
    if not s.memory:
        return "not measured (--no-memory)"
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the resting allocation, in process"
    return "RSS high-water mark (VmHWM, reset after a tiny warm-up call) of one call in a fresh subprocess"


def _progress_line(r: dict[str, Any]) -> str:
    if r["error"]:
        return f"  {r['kind']:>8} T={r['seq']:<6} error: {r['error']}"
    mem = f", peak {r['peak_mb']:.1f} MB" if r["peak_mb"] is not None else ""
    return f"  {r['kind']:>8} T={r['seq']:<6} {r['median_ms']:.3f} ms{mem}"


# ---------------------------------------------------------------------------------------------- outputs
def format_table(result: dict[str, Any]) -> str:
    """The result rows as a markdown table."""
    header = ["kind", "seq", "median ms", "IQR ms", "time × sdpa", "peak MB", "mem × sdpa", "note"]
    rows = [
        [
            r["kind"],
            str(r["seq"]),
            fmt(r["median_ms"], ".3f"),
            fmt(r["iqr_ms"], ".3f"),
            fmt(r["ratio_time_vs_sdpa"]),
            fmt(r["peak_mb"], ".1f"),
            fmt(r["ratio_mem_vs_sdpa"]),
            "; ".join(x for x in [r["error"] or "", _companion_note(r)] if x),
        ]
        for r in result["rows"]
    ]
    return markdown_table(header, rows)


def _companion_note(r: dict[str, Any]) -> str:
    """``"time × floor 1.23 (floor 4.1 ms)"`` for each companion measured beside the kind."""
    parts = []
    for name, c in (r.get("companions") or {}).items():
        if c.get("error"):
            parts.append(f"{name}: {c['error']}")
        elif c.get("median_ms"):
            parts.append(f"time × {name} {fmt(r.get(f'ratio_time_vs_{name}'))} ({name} {c['median_ms']:.3f} ms)")
    return "; ".join(parts)


def describe(result: dict[str, Any]) -> str:
    """One paragraph: what was measured, where."""
    m, s = result["machine"], result["settings"]
    return (
        f"Attention forward+backward, B={s['batch']}, C={s['embd']}, H={s['heads']}, {s['dtype']}, "
        f"median of {s['repeats']} calls after {s['warmup']} warm-up calls (kinds interleaved call by call; heavy companions such as pairwise timed after them), "
        f"on {m['device_name']} "
        f"({m['device']}, {m['torch_threads']} threads, torch {m['torch']}). Memory: {s['memory_method']}."
        f"{load_note(result.get('background_load', {}))}\n"
    )


def plot(result: dict[str, Any], path: Path) -> None:
    """Time vs N (median, interquartile band) and memory vs N, log-log, one line per kind; the legend sits
    outside the axes and the N ticks are the lengths measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    seqs = sorted({r["seq"] for r in result["rows"]})
    for ax, key, label in (
        (axes[0], "median_ms", "fwd+bwd time (ms; band: interquartile range)"),
        (axes[1], "peak_mb", "peak memory (MB)"),
    ):
        for kind in result["settings"]["kinds"]:
            rows = [r for r in result["rows"] if r["kind"] == kind and r[key] and r[key] > 0]
            if not rows:
                continue
            (line,) = ax.plot([r["seq"] for r in rows], [r[key] for r in rows], marker="o", label=kind)
            band = [r for r in rows if r.get("q1_ms") is not None and r.get("q3_ms") is not None]
            if key == "median_ms" and band:
                ax.fill_between([r["seq"] for r in band], [r["q1_ms"] for r in band], [r["q3_ms"] for r in band],
                                color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
        if ax.lines:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(seqs, [str(n) for n in seqs])
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    if axes[0].lines:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, title="kind")
    fig.suptitle(f"attention kinds on {result['machine']['device_name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: str | Path) -> Path:
    """``bench.json``, ``bench.md`` and ``bench.png`` in ``out``; returns the folder."""
    out = prepare_out(out)
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(describe(result) + "\n" + format_table(result), encoding="utf-8")
    plot(result, out / "bench.png")
    return out


__all__ = [
    "AttentionBenchSettings",
    "run_attention_bench",
    "write_outputs",
    "format_table",
    "parse_seq",
    "parse_kinds",
    "parse_attn_sets",
    "build_case",
    "fwd_bwd",
]

"""Reporting for ``geoformer compare``: summary table, plots, Markdown and self-contained HTML.

Input is the ``results`` dict written by the compare driver (also saved as ``results.json``)::

    {"preset", "baseline", "seeds", "tokens", "machine", "created", "command",
     "variants": {name: {"overrides": {...},
                         "runs": [{"seed", "summary": {...}, "metrics": [{...}, ...]}, ...]}}}

A run is *diverged* when it has no ``summary`` or its ``summary["final_val_loss"]`` is not a
finite number; diverged runs are listed (and counted) but left out of every mean and plot.

Public API: :func:`summarize`, :func:`format_table`, :func:`write_report`,
:func:`extra_metric_keys`.
"""

from __future__ import annotations

import base64
import html
import math
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoformer.cpuload import NOISY_CORES
from geoformer.experiments.stats import mean_std, paired_diff_ci, welch_ci

__all__ = ["summarize", "format_table", "write_report", "extra_metric_keys", "STANDARD_METRIC_KEYS"]

# Keys every metrics dict carries; any *other* numeric key is an "extra" metric and gets a panel.
# lr is plotted as an extra panel whenever the variants' lr traces differ (schedule comparisons).
STANDARD_METRIC_KEYS = frozenset({"step", "tokens", "train_loss", "val_loss", "val_bpb", "lr", "tokens_per_s", "wall_s"})


def _lr_differs(results: dict[str, Any]) -> bool:
    traces = {
        tuple(m.get("lr") for m in run.get("metrics", []))
        for v in results.get("variants", {}).values()
        for run in v.get("runs", [])
    }
    return len(traces) > 1

DPI = 110
_BASELINE_COLOR = "#333333"
# tab10 without its grey (kept for the baseline), so variant colours stay distinct from it
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#bcbd22", "#17becf")  # fmt: skip

VERDICT_BETTER = "better"
VERDICT_WORSE = "worse"
VERDICT_SAME = "no significant difference"
VERDICT_NA = "n/a"
VERDICT_BASELINE = "baseline"
VERDICT_DIVERGED = "diverged"


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _num(x: Any) -> float:
    """A float for int/float values (bools excluded), NaN for anything else (None, str, ...)."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return math.nan
    return float(x)


def _finite(x: float) -> bool:
    return isinstance(x, float | int) and math.isfinite(x)


def _variants(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return list((results.get("variants") or {}).items())


def _runs(variant: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(variant.get("runs") or [])


def _run_ok(run: Mapping[str, Any]) -> bool:
    summary = run.get("summary")
    return isinstance(summary, Mapping) and _finite(_num(summary.get("final_val_loss")))


def _ok_runs(variant: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in _runs(variant) if _run_ok(r)]


def _summary_values(runs: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    return [_num((r.get("summary") or {}).get(key)) for r in runs]


def _final_by_seed(variant: Mapping[str, Any]) -> dict[Any, float]:
    """Seed -> final val loss (NaN when the run diverged)."""
    out: dict[Any, float] = {}
    for i, run in enumerate(_runs(variant)):
        seed = run.get("seed", i)
        out[seed] = _num((run.get("summary") or {}).get("final_val_loss")) if _run_ok(run) else math.nan
    return out


def _colors(results: Mapping[str, Any]) -> dict[str, str]:
    baseline = results.get("baseline")
    colors, k = {}, 0
    for name, _ in _variants(results):
        if name == baseline:
            colors[name] = _BASELINE_COLOR
        else:
            colors[name] = _PALETTE[k % len(_PALETTE)]
            k += 1
    return colors


def extra_metric_keys(results: Mapping[str, Any]) -> list[str]:
    """Numeric metric keys beyond :data:`STANDARD_METRIC_KEYS`, in order of first appearance.

    A key qualifies when at least one value is a number and none is a non-numeric value
    (``None`` is tolerated as "not logged at this step").
    """
    seen: dict[str, bool] = {}
    for _, variant in _variants(results):
        for run in _runs(variant):
            for m in run.get("metrics") or []:
                for key, value in m.items():
                    if key in STANDARD_METRIC_KEYS or value is None:
                        continue
                    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
                    seen[key] = seen.get(key, True) and numeric
    keys = [k for k, ok in seen.items() if ok]
    return ["lr", *keys] if _lr_differs(results) else keys


# --------------------------------------------------------------------------------------------
# summary table
# --------------------------------------------------------------------------------------------


def _verdict(lo: float, hi: float) -> str:
    if not (_finite(lo) and _finite(hi)):
        return VERDICT_NA
    if hi < 0:
        return VERDICT_BETTER
    if lo > 0:
        return VERDICT_WORSE
    return VERDICT_SAME


def summarize(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant (in ``results["variants"]`` order) with numeric summary statistics.

    Row keys:

    * ``name``, ``is_baseline``, ``status`` (``"ok"`` / ``"partial"`` / ``"diverged"``),
      ``n_seeds`` (runs listed), ``n_ok`` (runs that finished with a finite loss),
      ``diverged_seeds`` (list of seeds);
    * ``params``;
    * ``final_val_loss_mean/_std``, ``best_val_loss_mean/_std`` (finished runs, ddof=1 std),
      ``perplexity`` = ``exp(final_val_loss_mean)``;
    * ``tokens_per_s_mean/_std``, ``throughput_ratio`` (mean tokens/s ÷ baseline's),
      ``peak_rss_mb_mean``, ``wall_s_mean`` (every run that reported them);
    * ``delta_mean``, ``delta_lo``, ``delta_hi``, ``delta_n``, ``delta_method``: final val loss
      minus the baseline's, paired by seed with a 95 % t-interval (:func:`paired_diff_ci`); when
      fewer than two seeds pair up but both sides have two or more runs, Welch's unpaired interval
      is used instead (``delta_method = "welch"``). NaN for the baseline row itself;
    * ``vs_baseline``: ``"better"`` (CI entirely below 0), ``"worse"`` (entirely above 0),
      ``"no significant difference"``, ``"n/a"`` (no interval: fewer than 2 seeds),
      ``"baseline"`` or ``"diverged"``.
    """
    baseline = results.get("baseline")
    variants = dict(_variants(results))
    base_variant = variants.get(baseline)
    base_final = _final_by_seed(base_variant) if base_variant is not None else {}
    base_tps = mean_std(_summary_values(_runs(base_variant), "tokens_per_s"))[0] if base_variant else math.nan

    rows = []
    for name, variant in variants.items():
        runs, ok = _runs(variant), _ok_runs(variant)
        with_summary = [r for r in runs if isinstance(r.get("summary"), Mapping)]
        final_m, final_s = mean_std(_summary_values(ok, "final_val_loss"))
        best_m, best_s = mean_std(_summary_values(ok, "best_val_loss"))
        tps_m, tps_s = mean_std(_summary_values(with_summary, "tokens_per_s"))
        bpb_m, bpb_s = mean_std(_summary_values(ok, "final_val_bpb"))
        params = next((p for p in _summary_values(with_summary, "params") if _finite(p)), math.nan)
        if not ok:
            status = "diverged"
        elif len(ok) < len(runs):
            status = "partial"
        else:
            status = "ok"

        row: dict[str, Any] = {
            "name": name,
            "is_baseline": name == baseline,
            "status": status,
            "n_seeds": len(runs),
            "n_ok": len(ok),
            "diverged_seeds": [r.get("seed", i) for i, r in enumerate(runs) if not _run_ok(r)],
            "params": int(params) if _finite(params) else None,
            "final_val_loss_mean": final_m,
            "final_val_loss_std": final_s,
            "best_val_loss_mean": best_m,
            "best_val_loss_std": best_s,
            "best_is_final": bool(ok) and all(
                _num(r["summary"].get("best_val_loss")) == _num(r["summary"].get("final_val_loss")) for r in ok
            ),
            "perplexity": math.exp(final_m) if _finite(final_m) and final_m < 700 else math.nan,
            "final_val_bpb_mean": bpb_m,
            "final_val_bpb_std": bpb_s,
            "tokens_per_s_mean": tps_m,
            "tokens_per_s_std": tps_s,
            "throughput_ratio": tps_m / base_tps if _finite(base_tps) and base_tps > 0 else math.nan,
            "peak_rss_mb_mean": mean_std(_summary_values(with_summary, "peak_rss_mb"))[0],
            "wall_s_mean": mean_std(_summary_values(with_summary, "wall_s"))[0],
            "delta_mean": math.nan,
            "delta_lo": math.nan,
            "delta_hi": math.nan,
            "delta_n": 0,
            "delta_method": None,
        }

        if name == baseline:
            row["vs_baseline"] = VERDICT_BASELINE
        elif status == "diverged":
            row["vs_baseline"] = VERDICT_DIVERGED
        elif base_variant is None:
            row["vs_baseline"] = VERDICT_NA
        else:
            mine = _final_by_seed(variant)
            common = [s for s in mine if s in base_final]
            ci = paired_diff_ci([mine[s] for s in common], [base_final[s] for s in common])
            method = "paired"
            if ci["n"] < 2:
                w = welch_ci(list(mine.values()), list(base_final.values()))
                if w["n_a"] >= 2 and w["n_b"] >= 2:
                    ci = {"mean": w["mean"], "lo": w["lo"], "hi": w["hi"], "n": min(w["n_a"], w["n_b"])}
                    method = "welch"
            row.update(
                delta_mean=ci["mean"], delta_lo=ci["lo"], delta_hi=ci["hi"], delta_n=ci["n"],
                delta_method=method if ci["n"] > 0 else None,
            )  # fmt: skip
            row["vs_baseline"] = _verdict(ci["lo"], ci["hi"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# cell formatting (shared by the terminal, Markdown and HTML tables)
# --------------------------------------------------------------------------------------------

_COLUMNS = (
    ("Variant", "l"), ("Seeds", "r"), ("Params", "r"), ("Final val loss", "r"), ("Best val loss", "r"),
    ("PPL", "r"), ("Bits/byte", "r"), ("Δ vs baseline [95% CI]", "r"), ("vs baseline", "l"), ("Tokens/s", "r"),
    ("× baseline", "r"), ("Peak RSS MB", "r"), ("Wall s", "r"),
)  # fmt: skip


def _fmt(x: float, spec: str) -> str:
    return format(x, spec) if _finite(x) else "n/a"


def _fmt_mean_std(m: float, s: float, n: int, spec: str) -> str:
    if not _finite(m):
        return "n/a"
    if n >= 2 and _finite(s):
        return f"{format(m, spec)} ± {format(s, spec)}"
    return format(m, spec)


def _fmt_best(row: Mapping[str, Any], n_ok: int) -> str:
    """The best validation loss, or "= final" when every run's best was its last evaluation."""
    if row.get("best_is_final"):
        return "= final"
    return _fmt_mean_std(row["best_val_loss_mean"], row["best_val_loss_std"], n_ok, ".3f")


def _fmt_ppl(p: float) -> str:
    if not _finite(p):
        return "n/a"
    return f"{p:.2f}" if p < 100 else f"{p:.1f}" if p < 10_000 else f"{p:.3g}"


def _fmt_delta(row: Mapping[str, Any]) -> str:
    if row["is_baseline"]:
        return VERDICT_BASELINE
    if row["status"] == "diverged":
        return VERDICT_DIVERGED
    m, lo, hi = row["delta_mean"], row["delta_lo"], row["delta_hi"]
    if not _finite(m):
        return "n/a"
    if _finite(lo) and _finite(hi):
        tag = " (welch)" if row.get("delta_method") == "welch" else ""
        return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{tag}"
    return f"{m:+.3f} (n={row['delta_n']})"


def _cells(row: Mapping[str, Any]) -> list[str]:
    n_ok, diverged = row["n_ok"], row["status"] == "diverged"
    seeds = str(row["n_seeds"]) if row["status"] == "ok" else f"{n_ok}/{row['n_seeds']}"
    loss = VERDICT_DIVERGED if diverged else None
    return [
        row["name"],
        seeds,
        f"{row['params']:,}" if row["params"] is not None else "n/a",
        loss or _fmt_mean_std(row["final_val_loss_mean"], row["final_val_loss_std"], n_ok, ".3f"),
        loss or _fmt_best(row, n_ok),
        loss or _fmt_ppl(row["perplexity"]),
        loss or _fmt_mean_std(row["final_val_bpb_mean"], row["final_val_bpb_std"], n_ok, ".3f"),
        _fmt_delta(row),
        row["vs_baseline"],
        _fmt_mean_std(row["tokens_per_s_mean"], row["tokens_per_s_std"], row["n_seeds"], ",.0f"),
        (_fmt(row["throughput_ratio"], ".2f") + "×") if _finite(row["throughput_ratio"]) else "n/a",
        _fmt(row["peak_rss_mb_mean"], ".0f"),
        _fmt(row["wall_s_mean"], ".1f"),
    ]


def format_table(results: Mapping[str, Any]) -> str:
    """Fixed-width plain-text summary table for the terminal (one line per variant)."""
    rows = summarize(results)
    header = [c for c, _ in _COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if align == "l" else c.rjust(w)
            for c, w, (_, align) in zip(cells, widths, _COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    lines = [line(header), sep, *(line(b) for b in body)]
    base = results.get("baseline")
    lines.append(
        f"Δ = final val loss minus baseline '{base}' (negative = lower loss), 95% t-interval paired by seed."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _pyplot():
    """Import pyplot on the Agg backend (only switched if pyplot has not been imported yet)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class _Curve:
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # NaN where fewer than two seeds logged the step
    n: np.ndarray


def _curve(runs: Iterable[Mapping[str, Any]], key: str, x_key: str = "tokens") -> _Curve | None:
    """Mean/std over runs of metric ``key``, aligned by ``step``; x is the mean of ``x_key``."""
    by_step: dict[float, tuple[list[float], list[float]]] = {}
    for run in runs:
        for i, m in enumerate(run.get("metrics") or []):
            y = _num(m.get(key))
            if not math.isfinite(y):
                continue
            step = _num(m.get("step"))
            step = float(i) if not math.isfinite(step) else step
            x = _num(m.get(x_key))
            xs, ys = by_step.setdefault(step, ([], []))
            xs.append(x if math.isfinite(x) else step)
            ys.append(y)
    if not by_step:
        return None
    steps = sorted(by_step)
    x = np.array([np.mean(by_step[s][0]) for s in steps])
    stats = [mean_std(by_step[s][1]) for s in steps]
    n = np.array([len(by_step[s][1]) for s in steps])
    mean = np.array([m for m, _ in stats])
    std = np.where(n >= 2, np.array([s for _, s in stats]), np.nan)
    return _Curve(x, mean, std, n)


def _label(name: str, row: Mapping[str, Any]) -> str:
    if row["status"] == "diverged":
        return f"{name} (diverged)"
    if row["status"] == "partial":
        return f"{name} ({len(row['diverged_seeds'])}/{row['n_seeds']} diverged)"
    return name


def _eng_axis(ax, axis: str = "x") -> None:
    from matplotlib.ticker import EngFormatter

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(EngFormatter(sep=""))


def _plot_loss_curves(plt, results, rows, colors, path: Path) -> None:
    """Val loss (mean line ± std band) and train loss (thin dashed) vs tokens; right panel zooms."""
    from matplotlib.lines import Line2D

    fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        curves = {}
        for name, variant in _variants(results):
            ok = _ok_runs(variant)
            curves[name] = (_curve(ok, "val_loss"), _curve(ok, "train_loss"))
        zoom_lo, zoom_hi, x_max = math.inf, -math.inf, 0.0
        for c_val, c_tr in curves.values():
            for c in (c_val, c_tr):
                if c is not None and c.x.size:
                    x_max = max(x_max, float(np.nanmax(c.x)))
        for ax in (ax_all, ax_zoom):
            for name, (c_val, c_tr) in curves.items():
                color = colors[name]
                lw = 2.2 if name == results.get("baseline") else 1.6
                if c_tr is not None:
                    ax.plot(c_tr.x, c_tr.mean, color=color, lw=0.8, ls="--", alpha=0.8)
                if c_val is not None:
                    ax.plot(c_val.x, c_val.mean, color=color, lw=lw, marker="o", ms=2.5)
                    ax.fill_between(c_val.x, c_val.mean - c_val.std, c_val.mean + c_val.std,
                                    color=color, alpha=0.18, lw=0)  # fmt: skip
            ax.set_xlabel("tokens")
            ax.set_ylabel("loss (nats/token)")
            ax.grid(alpha=0.3)
            _eng_axis(ax)
        # zoom on the second half of training, where the variants separate
        for c_val, c_tr in curves.values():
            for c in (c_val, c_tr):
                if c is None:
                    continue
                sel = c.x >= 0.5 * x_max
                if sel.any():
                    band = np.nan_to_num(c.std[sel])
                    zoom_lo = min(zoom_lo, float(np.nanmin(c.mean[sel] - band)))
                    zoom_hi = max(zoom_hi, float(np.nanmax(c.mean[sel] + band)))
        if math.isfinite(zoom_lo) and math.isfinite(zoom_hi) and x_max > 0:
            pad = max(0.08 * (zoom_hi - zoom_lo), 1e-3)
            ax_zoom.set_xlim(0.5 * x_max, x_max * 1.02)
            ax_zoom.set_ylim(zoom_lo - pad, zoom_hi + pad)
        ax_all.set_title("Loss vs tokens (mean over seeds)")
        ax_zoom.set_title("Second half of training (zoom)")

        handles = [
            Line2D([], [], color=colors[name], lw=2, ls="-" if row["status"] != "diverged" else ":")
            for (name, _), row in zip(_variants(results), rows, strict=True)
        ]
        labels = [_label(name, row) for (name, _), row in zip(_variants(results), rows, strict=True)]
        leg = ax_all.legend(handles, labels, loc="upper right", fontsize=8, title="variant",
                            title_fontsize=8)  # fmt: skip
        ax_all.add_artist(leg)
        style = [
            Line2D([], [], color="k", lw=1.6, marker="o", ms=2.5),
            Line2D([], [], color="k", lw=0.8, ls="--"),
        ]
        band_note = "val (mean ± std band)" if any(r["n_ok"] >= 2 for r in rows) else "val"
        ax_all.legend(style, [band_note, "train"], loc="center right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def _bar_ticks(ax, names: Sequence[str], labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    rotate = len(names) > 4 or max((len(s) for s in labels), default=0) > 12
    ax.set_xticklabels(labels, rotation=25 if rotate else 0, ha="right" if rotate else "center", fontsize=8)


def _tick_labels(results, rows) -> list[str]:
    base = results.get("baseline")
    out = []
    for row in rows:
        label = row["name"] + ("\n(baseline)" if row["name"] == base else "")
        if row["status"] == "partial":
            label += f"\n({len(row['diverged_seeds'])}/{row['n_seeds']} diverged)"
        out.append(label)
    return out


def _error_bars(ax, means: np.ndarray, stds: np.ndarray, ns: Sequence[int]) -> None:
    """± std error bars, only on bars that average two or more runs (no zero-width caps)."""
    idx = [i for i, n in enumerate(ns) if n >= 2 and np.isfinite(means[i]) and np.isfinite(stds[i])]
    if idx:
        ax.errorbar(idx, means[idx], yerr=stds[idx], fmt="none", ecolor="black", elinewidth=1.2, capsize=4)


def _highlight_baseline(bars, rows) -> None:
    for bar, row in zip(bars, rows, strict=True):
        if row["is_baseline"]:
            bar.set_edgecolor("black")
            bar.set_linewidth(2.0)
            bar.set_hatch("//")


def _plot_final_loss(plt, results, rows, colors, path: Path) -> None:
    """A dot per variant: mean final val loss with its 95% t-interval (the interval of the mean over seeds, not
    the spread), the baseline's mean as a dashed line; no bars, so no truncated axis is needed."""
    from geoformer.experiments.stats import t_quantile

    fig, ax = plt.subplots(figsize=(7.0, max(2.4, 0.42 * len(rows) + 1.2)))
    try:
        ys = list(range(len(rows)))[::-1]
        base = next((r for r in rows if r["is_baseline"]), None)
        if base is not None and _finite(base["final_val_loss_mean"]):
            ax.axvline(base["final_val_loss_mean"], color=_BASELINE_COLOR, ls="--", lw=0.9, alpha=0.7)
        for y, row in zip(ys, rows, strict=True):
            m, s_, n = row["final_val_loss_mean"], row["final_val_loss_std"], row["n_ok"]
            if row["status"] == "diverged" or not _finite(m):
                ax.text(0.01, y, "diverged", transform=ax.get_yaxis_transform(), color="firebrick", fontsize=8,
                        va="center")  # fmt: skip
                continue
            half = t_quantile(n - 1) * s_ / math.sqrt(n) if n >= 2 and _finite(s_) else 0.0
            c = colors[row["name"]]
            ax.errorbar(m, y, xerr=half if half > 0 else None, fmt="o", color=c, ecolor=c, capsize=3, ms=6,
                        markeredgecolor="black" if row["is_baseline"] else c)  # fmt: skip
            note = f"{m:.3f}" + (f" ± {half:.3f}" if half > 0 else "")
            if row["vs_baseline"] in (VERDICT_BETTER, VERDICT_WORSE):
                note += f"  {row['vs_baseline']}"
            ax.annotate(note, (m + half, y), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7.5)
        ax.set_yticks(ys)
        ax.set_yticklabels([lab.replace("\n", " ") for lab in _tick_labels(results, rows)], fontsize=8)
        ax.set_xlabel("final validation loss (nats/token)")
        n = max((r["n_ok"] for r in rows), default=0)
        ax.set_title(f"Final validation loss: mean and 95% interval of the mean ({n} seed{'s' * (n != 1)})")
        ax.grid(axis="x", alpha=0.3)
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + 0.25 * (hi - lo))  # room for the labels
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def _plot_throughput(plt, results, rows, colors, path: Path) -> None:
    """Two panels: training tokens/s (± std, annotated with ratio to baseline) and peak RSS."""
    names = [r["name"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(rows) + 3), 3.8))
    try:
        tps = np.array([r["tokens_per_s_mean"] for r in rows], dtype=float)
        tps_sd = np.nan_to_num(np.array([r["tokens_per_s_std"] if r["n_seeds"] >= 2 else 0.0
                                         for r in rows], dtype=float))  # fmt: skip
        rss = np.array([r["peak_rss_mb_mean"] for r in rows], dtype=float)
        bar_colors = [colors[n] for n in names]
        labels = _tick_labels(results, rows)

        bars = ax_t.bar(range(len(rows)), np.nan_to_num(tps), color=bar_colors, alpha=0.85)
        _error_bars(ax_t, tps, tps_sd, [r["n_seeds"] for r in rows])
        _highlight_baseline(bars, rows)
        top_t = float(np.nanmax(tps + tps_sd)) if np.isfinite(tps).any() else 1.0
        for i, row in enumerate(rows):
            ratio = row["throughput_ratio"]
            text = f"{ratio:.2f}×" if _finite(ratio) else "n/a"
            y = (tps[i] + tps_sd[i]) if np.isfinite(tps[i]) else 0.0
            ax_t.text(i, y + 0.02 * top_t, text, ha="center", va="bottom", fontsize=8)
        ax_t.set_ylim(0, top_t * 1.15)
        ax_t.set_ylabel("training tokens/s")
        ax_t.set_title("Throughput (label: ratio to baseline)")
        _eng_axis(ax_t, "y")

        bars = ax_m.bar(range(len(rows)), np.nan_to_num(rss), color=bar_colors, alpha=0.85)
        _highlight_baseline(bars, rows)
        top_m = float(np.nanmax(rss)) if np.isfinite(rss).any() else 1.0
        for i, v in enumerate(rss):
            ax_m.text(i, (v if np.isfinite(v) else 0.0) + 0.02 * top_m, _fmt(v, ".0f"),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
        ax_m.set_ylim(0, top_m * 1.15)
        ax_m.set_ylabel("peak RSS (MB)")
        ax_m.set_title("Peak memory (mean over runs)")
        for ax in (ax_t, ax_m):
            _bar_ticks(ax, names, labels)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def _plot_extra_metrics(plt, results, rows, colors, keys: Sequence[str], path: Path) -> None:
    """One small panel per extra metric key: mean over seeds (± std band) vs step, per variant."""
    from matplotlib.lines import Line2D

    ncols = min(len(keys), 3 if len(keys) <= 9 else 4)
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.5 * nrows + 0.6), squeeze=False)
    try:
        plotted: dict[str, str] = {}
        for ax, key in zip(axes.flat, keys, strict=False):
            ymin, ymax = math.inf, -math.inf
            for (name, variant), row in zip(_variants(results), rows, strict=True):
                c = _curve(_ok_runs(variant), key, x_key="step")
                if c is None:
                    continue
                plotted[name] = _label(name, row)
                ax.plot(c.x, c.mean, color=colors[name], lw=1.4)
                ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, color=colors[name], alpha=0.15, lw=0)
                ymin, ymax = min(ymin, float(np.nanmin(c.mean))), max(ymax, float(np.nanmax(c.mean)))
            if ymin > 0 and ymax / ymin > 100:
                ax.set_yscale("log")
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys) :]:
            ax.set_visible(False)
        names = [n for n, _ in _variants(results) if n in plotted]
        handles = [Line2D([], [], color=colors[n], lw=2) for n in names]
        fig.legend(handles, [plotted[n] for n in names], loc="upper center", ncol=min(len(names), 6),
                   fontsize=8, frameon=False)  # fmt: skip
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.5 * nrows + 0.6)))
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------------
# documents: one block list, rendered as Markdown and as self-contained HTML
# --------------------------------------------------------------------------------------------

_PLOTS = (
    ("loss_curves", "Loss curves",
     "Validation loss vs tokens (mean over seeds, shaded ± std); dashed thin lines are training loss. "
     "Right panel zooms on the second half of training."),
    ("final_loss", "Final validation loss",
     "Mean final validation loss per variant (dot) with the 95% t-interval of that mean over seeds; the dashed "
     "line is the baseline's mean."),
    ("throughput", "Throughput and memory",
     "Training tokens/s (labels: ratio to the baseline) and peak resident memory per variant."),
    ("extra_metrics", "Extra metrics",
     "Every additional numeric metric logged during training, mean over seeds vs step."),
)  # fmt: skip


def _how_to_read(results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    n = len(results.get("seeds") or []) or max((r["n_seeds"] for r in rows), default=0)
    base = results.get("baseline")
    paras = [
        f"**Δ vs baseline** is a variant's final validation loss minus the baseline `{base}`'s, "
        f"computed per seed (a variant's run is paired with the baseline run of the same seed) and averaged "
        f"over the seeds where both finished ({n} seed{'s' * (n != 1)} planned). The bracket is a 95% "
        "paired t-interval over those n seeds: mean(d) ± t(0.975, n−1) · sd(d)/√n. Negative means lower "
        "loss than the baseline. (If fewer than two seeds pair up, Welch's unpaired interval is used and "
        'marked "welch".) '
        f"**vs baseline** reads *better* when the whole interval is below 0, *worse* when it is above 0, "
        f'and *no significant difference* otherwise — which is not the same as "equal": with few seeds '
        f"the interval is wide. With a single seed there is no interval (n/a).",
        "Loss is ± the sample standard deviation over seeds; PPL is exp(mean final val loss); bits/byte is the "
        "final val loss in bits per UTF-8 byte of the validation text (loss / ln 2 × tokens / bytes), which compares "
        "across tokenizers (a BPE run's loss per token does not compare with a character run's). In metrics.jsonl and "
        "the curves, the training loss of an evaluation is the mean over the steps since the previous one; the "
        "validation loss is measured at that step (fixed batches). 'Best' is shown only where some run's best "
        "evaluation was not its last. "
        "Tokens/s is tokens trained / time spent in training steps (evaluations and checkpoints excluded, every "
        "segment of a resumed run included). Tokens/s, the × baseline ratio, peak RSS and wall time were measured "
        "in this same run on the "
        "same machine with the same data and token budget, so they compare with each other but not with "
        "numbers from other machines.",
    ]
    if any(r["status"] != "ok" for r in rows):
        paras.append(
            "Runs that diverged (non-finite final loss, or no summary) are listed with their seeds but left "
            "out of every mean, interval and curve."
        )
    return paras


def background_load(results: Mapping[str, Any]) -> str | None:
    """A sentence on how busy the machine was: the cores other processes kept busy while the runs trained
    (each run's ``background_cores``), mean and max over runs; None when no run recorded it."""
    vals = [v for _, variant in _variants(results) for v in _summary_values(_runs(variant), "background_cores")]
    vals = [v for v in vals if _finite(v)]
    if not vals:
        return None
    mean, top = statistics.fmean(vals), max(vals)
    text = (f"other processes kept {mean:.2f} cores busy on average while a run trained (max {top:.2f} in one run; "
            f"parallel runs of this comparison count as other)")  # fmt: skip
    if top > NOISY_CORES:
        text += ": timings (tokens/s, wall time) were taken on a loaded machine"
    return text


def _blocks(results: Mapping[str, Any], rows: list[dict[str, Any]], plots: Mapping[str, Path]) -> list:
    seeds = results.get("seeds") or []
    tokens = results.get("tokens")
    title = "geoformer compare" + (f" — {results['preset']} preset" if results.get("preset") else "")
    meta = [
        ("Command", results.get("command"), True),
        ("Machine", results.get("machine"), False),
        ("Date", results.get("created"), False),
        ("Baseline", results.get("baseline"), True),
        ("Seeds", f"{', '.join(map(str, seeds))} (n = {len(seeds)})" if seeds else None, False),
        ("Token budget", f"{tokens:,} tokens per run" if isinstance(tokens, int) else tokens, False),
        ("Background load", background_load(results), False),
    ]
    blocks: list = [
        ("h1", title),
        ("meta", [(k, str(v), code) for k, v, code in meta if v not in (None, "")]),
    ]
    blocks += [("h2", "Summary"), ("table", [c for c, _ in _COLUMNS], [_cells(r) for r in rows], rows)]

    variant_lines = []
    for name, variant in _variants(results):
        ov = variant.get("overrides") or {}
        pairs = ov.items() if isinstance(ov, Mapping) else [(k, v) for k, v in ov] if _pairs(ov) else None
        spec = ", ".join(f"`{k}={v}`" for k, v in pairs) if pairs is not None else f"`{ov}`"
        variant_lines.append(f"`{name}`: {spec or '(no overrides)'}")
    for name, variant in _variants(results):
        for i, run in enumerate(_runs(variant)):
            if _run_ok(run):
                continue
            why = (run.get("summary") or {}).get("diverged") or (
                "no summary" if not isinstance(run.get("summary"), Mapping) else "non-finite final loss"
            )
            why = " ".join(str(why).split())
            why = why if len(why) <= 160 else why[:157] + "..."
            variant_lines.append(f"**Diverged:** `{name}` seed {run.get('seed', i)}: {why}")
    blocks += [("h2", "Variants"), ("list", variant_lines)]

    blocks.append(("h2", "Plots"))
    for key, heading, caption in _PLOTS:
        if key in plots:
            blocks += [("h3", heading), ("img", heading, plots[key]), ("p", caption)]
    blocks.append(("h2", "How to read this report"))
    blocks += [("p", p) for p in _how_to_read(results, rows)]
    return blocks


def _pairs(x: Any) -> bool:
    return isinstance(x, list | tuple) and all(isinstance(p, list | tuple) and len(p) == 2 for p in x)


def _md_escape_cell(s: str) -> str:
    return s.replace("|", "\\|")


def _render_markdown(blocks: list) -> str:
    out: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "meta":
            out += [f"- **{k}:** " + (f"`{v}`" if code else v) for k, v, code in rest[0]] + [""]
        elif kind == "table":
            header, body, _ = rest
            aligns = ["---" if a == "l" else "---:" for _, a in _COLUMNS]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join(aligns) + "|")
            out += ["| " + " | ".join(_md_escape_cell(c) for c in cells) + " |" for cells in body]
            out.append("")
        elif kind == "list":
            out += [f"- {item}" for item in rest[0]] + [""]
        elif kind == "img":
            alt, path = rest
            out += [f"![{alt}]({Path(path).name})", ""]
        elif kind == "p":
            out += [rest[0], ""]
    return "\n".join(out).rstrip() + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn the Markdown subset used here (`code`, **bold**, *em*) into tags."""
    out = []
    for k, part in enumerate(re.split(r"`([^`]+)`", text)):  # odd parts are code spans
        s = html.escape(part, quote=False)
        if k % 2:
            out.append(f"<code>{s}</code>")
            continue
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        out.append(re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s))
    return "".join(out)


_CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1320px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.6em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.92em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .45em;white-space:nowrap}th{background:#f6f6f6}
td.r{text-align:right;font-variant-numeric:tabular-nums}tr.baseline td{background:#f4f7fb;font-weight:600}
.better{color:#17803d;font-weight:600}.worse{color:#b42318;font-weight:600}.diverged{color:#b42318}
img{max-width:100%;border:1px solid #eee}figure{margin:.5em 0 1.2em}figcaption{color:#555;font-size:.9em}
.wrap{overflow-x:auto}
""".strip()


def _render_html(blocks: list) -> str:
    title = next((b[1] for b in blocks if b[0] == "h1"), "geoformer compare")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    i = 0
    while i < len(blocks):
        kind, *rest = blocks[i]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "meta":
            items = "".join(
                f"<li><strong>{html.escape(k)}:</strong> "
                + (f"<code>{html.escape(v)}</code>" if code else html.escape(v))
                + "</li>"
                for k, v, code in rest[0]
            )
            out.append(f"<ul>{items}</ul>")
        elif kind == "table":
            header, body, rows = rest
            th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = []
            for cells, row in zip(body, rows, strict=True):
                tds = []
                for (_, align), c in zip(_COLUMNS, cells, strict=True):
                    cls = [align] if align == "r" else []
                    if c in (VERDICT_BETTER, VERDICT_WORSE, VERDICT_DIVERGED):
                        cls.append(c)
                    attr = f' class="{" ".join(cls)}"' if cls else ""
                    tds.append(f"<td{attr}>{html.escape(c)}</td>")
                tr_cls = ' class="baseline"' if row["is_baseline"] else ""
                trs.append(f"<tr{tr_cls}>{''.join(tds)}</tr>")
            out.append(f'<div class="wrap"><table><thead><tr>{th}</tr></thead>'
                       f"<tbody>{''.join(trs)}</tbody></table></div>")  # fmt: skip
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in rest[0]) + "</ul>")
        elif kind == "img":
            alt, path = rest
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            caption = ""
            if i + 1 < len(blocks) and blocks[i + 1][0] == "p":  # the caption paragraph follows
                caption = f"<figcaption>{_inline_html(blocks[i + 1][1])}</figcaption>"
                i += 1
            out.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                       f"{caption}</figure>")  # fmt: skip
        elif kind == "p":
            out.append(f"<p>{_inline_html(rest[0])}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def write_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write plots, ``report.md`` and a self-contained ``report.html`` into ``out_dir``.

    Returns ``{"loss_curves", "final_loss", "throughput", ["extra_metrics",] "report_md",
    "report_html"}`` -> path. ``extra_metrics.png`` is only written when the metrics carry
    numeric keys beyond :data:`STANDARD_METRIC_KEYS`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    rows = summarize(results)
    colors = _colors(results)

    paths: dict[str, Path] = {
        "loss_curves": out_dir / "loss_curves.png",
        "final_loss": out_dir / "final_loss.png",
        "throughput": out_dir / "throughput.png",
    }
    _plot_loss_curves(plt, results, rows, colors, paths["loss_curves"])
    _plot_final_loss(plt, results, rows, colors, paths["final_loss"])
    _plot_throughput(plt, results, rows, colors, paths["throughput"])
    keys = extra_metric_keys(results)
    if keys:
        paths["extra_metrics"] = out_dir / "extra_metrics.png"
        _plot_extra_metrics(plt, results, rows, colors, keys, paths["extra_metrics"])

    blocks = _blocks(results, rows, paths)
    paths["report_md"] = out_dir / "report.md"
    paths["report_md"].write_text(_render_markdown(blocks), encoding="utf-8")
    paths["report_html"] = out_dir / "report.html"
    paths["report_html"].write_text(_render_html(blocks), encoding="utf-8")
    return paths

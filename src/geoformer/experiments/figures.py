"""``geoformer plot curves``: validation-loss curves of chosen variants of a comparison, with reference lines.

The figures in the docs that are not a comparison's own report (e.g. the baselines against nanoGPT's
published 1.87 in docs/ARENA.md) come from here, from the ``results.json`` of a real comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geoformer.errors import GeoformerError
from geoformer.experiments import report


def parse_reference(text: str) -> tuple[float, str]:
    """``"1.87=nanoGPT train.py"`` -> (1.87, "nanoGPT train.py"); the label is optional."""
    value, _, label = text.partition("=")
    try:
        y = float(value)
    except ValueError:
        raise GeoformerError(f"--reference wants VALUE[=LABEL], got {text!r}") from None
    if not math.isfinite(y):
        raise GeoformerError(f"--reference value must be finite, got {text!r}")
    return y, label or f"{y:g}"


def plot_curves(
    results: dict[str, Any], out: Path, *, variants: list[str] | None = None,
    references: list[tuple[float, str]] = (), title: str = "", x_key: str = "step",
) -> Path:  # fmt: skip
    """Val loss (mean line, min-max band over seeds) per variant against ``x_key``; horizontal reference lines."""
    known = list(results.get("variants") or {})
    names = variants or known
    unknown = [v for v in names if v not in known]
    if unknown:
        raise GeoformerError(f"unknown variant {unknown[0]!r}; this comparison has: {', '.join(known)}")
    plt = report._pyplot()
    colors = report._colors(results)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    try:
        lo = math.inf
        for name in names:
            runs = report._ok_runs(results["variants"][name])
            c = report._curve(runs, "val_loss", x_key)
            if c is None:
                continue
            finals = [float(r["summary"]["final_val_loss"]) for r in runs]
            ys = _per_seed(runs, x_key)
            label = f"{name}: final {np.mean(finals):.3f} ± {np.std(finals, ddof=1) if len(finals) > 1 else 0:.3f} (n={len(finals)})"
            ax.plot(c.x, c.mean, color=colors[name], lw=1.8, label=label)
            if ys is not None:
                ax.fill_between(ys[0], ys[1].min(0), ys[1].max(0), color=colors[name], alpha=0.2, lw=0)
            lo = min(lo, float(np.nanmin(c.mean)))
        for y, label in references:
            ax.axhline(y, color="k", ls="--", lw=1)
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), ha="left", va="top", fontsize=8)
            lo = min(lo, y)
        if math.isfinite(lo):
            ax.set_ylim(lo - 0.1, lo + 1.4)
        ax.set_xlabel(x_key)
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(title or f"{results.get('preset', '')}: validation loss (band: min-max over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=report.DPI)
    finally:
        plt.close(fig)
    return out


def _per_seed(runs, x_key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, Y) with Y one row per seed over the steps every seed logged."""
    series = [{m["step"]: (m.get(x_key, m["step"]), m["val_loss"]) for m in r.get("metrics") or []} for r in runs]
    common = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not common:
        return None
    x = np.array([series[0][s][0] for s in common], dtype=float)
    return x, np.array([[s[k][1] for k in common] for s in series], dtype=float)

"""Reading a continual-learning table: paired intervals against naive and EWC, and the trade-off plot.

Pure functions of the rows of ``continual.json`` (each: seed, method, lr_b, forgetting, b_after in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

from geoformer.circuits.methods import METHODS
from geoformer.experiments.stats import mean_std, paired_diff_ci


def _by(rows: list[dict], method: str, lr: float, key: str) -> dict[int, float]:
    return {r["seed"]: 100 * r[key] for r in rows if r["method"] == method and r["lr_b"] == lr}


def paired(rows: list[dict], key: str, m1: str, m2: str, lr: float, level: float = 0.95) -> dict[str, float]:
    """Paired t-interval over seeds of ``key`` (in points) for ``m1`` minus ``m2`` at phase-B lr ``lr``."""
    a, b = _by(rows, m1, lr, key), _by(rows, m2, lr, key)
    seeds = sorted(set(a) & set(b))
    return paired_diff_ci([a[s] for s in seeds], [b[s] for s in seeds], level)


def _ci(d: dict[str, float]) -> str:
    if d["n"] == 0:
        return "-"
    if d["n"] < 2:
        return f"{d['mean']:+.1f}"
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def paired_table(rows: list[dict], level: float = 0.95) -> str:
    """Markdown: per lr and method, method minus naive and method minus EWC, for forgetting and B accuracy."""
    lines = [
        f"Paired {100 * level:.0f}% t-intervals over seeds, method minus reference (points; forgetting: lower is "
        "better, B: higher is better):",
        "",
        "| phase-B lr | method | forgetting - naive | B - naive | forgetting - EWC | B - EWC | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for lr in sorted({r["lr_b"] for r in rows}):
        for m in METHODS:
            if m == "naive" or not _by(rows, m, lr, "forgetting"):
                continue
            cells = [_ci(paired(rows, k, m, ref, lr, level)) if m != ref else "-"
                     for ref in ("naive", "ewc") for k in ("forgetting", "b_after")]  # fmt: skip
            n = paired(rows, "forgetting", m, "naive", lr, level)["n"]
            lines.append(f"| {lr:g} | {m} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {n} |")
    return "\n".join(lines) + "\n"


def goal_table(rows: list[dict], max_forgetting: float = 5.0, min_b_frac: float = 0.9) -> str:
    """Which methods meet the goal at each lr: mean forgetting <= ``max_forgetting`` points and mean B accuracy
    >= ``min_b_frac`` x naive's (means over seeds; the ledger's rows decide with intervals)."""
    lines = [
        f"Goal: mean forgetting <= {max_forgetting:g} points and mean B >= {100 * min_b_frac:.0f}% of naive's B:",
        "",
    ]
    for lr in sorted({r["lr_b"] for r in rows}):
        nb = mean_std(list(_by(rows, "naive", lr, "b_after").values()))[0]
        met = []
        for m in METHODS:
            f = mean_std(list(_by(rows, m, lr, "forgetting").values()))[0]
            b = mean_std(list(_by(rows, m, lr, "b_after").values()))[0]
            if m != "naive" and f == f and f <= max_forgetting and b >= min_b_frac * nb:
                met.append(f"{m} ({f:.1f} pts, B {b:.1f}%)")
        lines.append(f"- lr {lr:g} (naive B {nb:.1f}%): " + (", ".join(met) if met else "no method"))
    return "\n".join(lines) + "\n"


def tradeoff_plot(rows: list[dict], path: Path) -> None:
    """Forgetting of A against B accuracy, one marker per method (mean, with +-1 std bars), a panel per lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = sorted({r["lr_b"] for r in rows})
    fig, axes = plt.subplots(1, len(lrs), figsize=(5.2 * len(lrs), 4.4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, lr in zip(axes[0], lrs, strict=True):
        for i, m in enumerate(METHODS):
            f, b = _by(rows, m, lr, "forgetting"), _by(rows, m, lr, "b_after")
            if not f:
                continue
            (fm, fs), (bm, bs) = mean_std(list(f.values())), mean_std(list(b.values()))
            ax.errorbar(bm, fm, xerr=bs, yerr=fs, fmt="o", color=cmap(i % 10), capsize=3, label=m)
            ax.annotate(m, (bm, fm), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.axhline(5, color="grey", lw=0.8, ls="--")
        nb = mean_std(list(_by(rows, "naive", lr, "b_after").values()))[0]
        if nb == nb:
            ax.axvline(0.9 * nb, color="grey", lw=0.8, ls=":")
        ax.set_title(f"phase-B lr {lr:g} (goal: below the dashed line, right of the dotted one)", fontsize=8)
        ax.set_xlabel("B accuracy after phase B (%, test split)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forgetting of A (points, test split)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)

"""The ledger's forest plot: every comparison (directional) decision, in units of its own delta."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from geoformer.claims.rules import Decision

_COLOURS = {"reproduced": "#2e7d32", "not reproduced": "#c62828", "inconclusive": "#757575"}
_CLIP = 8.0  # intervals beyond +-8 deltas are drawn to the edge with an arrow


def forest_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{label, estimate, lo, hi, outcome}`` in units of delta, oriented so the claimed side is positive,
    for every directional decision of every row (compound rows contribute each directional part)."""
    pts = []

    def visit(label: str, d: Decision, row_outcome: str) -> None:
        spec, iv = d.spec, d.interval
        if spec.get("form") == "directional" and iv is not None and iv.defined:
            s = (1.0 if spec["side"] == "positive" else -1.0) / spec["delta"]
            lo, hi = sorted((s * iv.lo, s * iv.hi))
            est = s * iv.estimate if math.isfinite(iv.estimate) else (lo + hi) / 2
            pts.append({"label": label, "estimate": est, "lo": lo, "hi": hi, "outcome": d.outcome,
                        "units": spec.get("units", ""), "delta": spec["delta"]})  # fmt: skip
        for k, p in d.parts.items():
            visit(f"{label}: {k}", p, row_outcome)

    for r in rows:
        dec = r.get("decision")
        if dec:
            visit(r["id"], Decision.from_dict(dec), r["verdict"])
    return pts


def forest_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Write the plot to ``path``; False (and no file) when no row has a directional interval."""
    pts = forest_points(rows)
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = max(2.5, 0.32 * len(pts) + 1.2)
    fig, ax = plt.subplots(figsize=(9.5, h))
    ax.axvspan(-1, 1, color="#e0e0e0", zorder=0, label="(-delta, +delta): too small to matter")
    ax.axvline(0, color="k", lw=0.8)
    for i, p in enumerate(reversed(pts)):
        c = _COLOURS[p["outcome"]]
        lo, hi = max(p["lo"], -_CLIP), min(p["hi"], _CLIP)
        ax.plot([lo, hi], [i, i], color=c, lw=2)
        if math.isfinite(p["estimate"]) and abs(p["estimate"]) <= _CLIP:
            ax.plot(p["estimate"], i, "o", color=c, ms=5)
        for end, clipped, marker in ((lo, p["lo"] < -_CLIP, "<"), (hi, p["hi"] > _CLIP, ">")):
            if clipped:
                ax.plot(end, i, marker, color=c, ms=6)
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels([f"{p['label']}  (delta {p['delta']:g} {p['units']})" for p in reversed(pts)], fontsize=7)
    ax.set_xlim(-_CLIP - 0.5, _CLIP + 0.5)
    ax.set_xlabel("effect / delta, claimed direction to the right (interval at the row's look level)")
    for outcome, c in _COLOURS.items():
        ax.plot([], [], color=c, lw=2, label=outcome)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08 - 0.6 / h), ncol=4, fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Claims ledger: comparison rows against their smallest effect of interest", fontsize=9)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return True

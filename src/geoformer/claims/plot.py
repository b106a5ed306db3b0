"""The ledger's forest plot: every comparison decision, each in units of its own scale.

Three panels, each drawn only when some row has a decision of its form:

- directional decisions (a change with a smallest effect of interest delta): effect / delta, claimed side to the
  right, the grey band (-delta, +delta) too small to matter;
- bound decisions (a quantity below or above a stated bound, and the ARC bar): the margin to the bound in units of
  the bound's size, (bound - q) / |bound| for "below" and (q - bound) / |bound| for "above", so the claim holds
  right of 0;
- equivalence decisions (a quantity equal to a value within a tolerance): (q - value) / tol, the claimed band
  (-1, +1) shaded.

Zero-rate decisions (a count of successes) have no interval on such a scale and are left to the table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from geoformer.claims.rules import Decision

_COLOURS = {"reproduced": "#2e7d32", "not reproduced": "#c62828", "inconclusive": "#757575"}
_CLIP = 8.0  # intervals beyond +-8 units are drawn to the edge with an arrow


def _decisions(rows: list[dict[str, Any]]):
    """``(label, decision)`` for every decision of every row, compound rows' parts labelled ``id: part``."""

    def visit(label: str, d: Decision):
        yield label, d
        for k, p in d.parts.items():
            yield from visit(f"{label}: {k}", p)

    for r in rows:
        if r.get("decision"):
            yield from visit(r["id"], Decision.from_dict(r["decision"]))


def _point(label: str, d: Decision, scale: float, shift: float, units: str, note: str) -> dict[str, Any]:
    """The interval mapped by ``x -> scale * (x - shift)``, ends sorted."""
    iv = d.interval
    lo, hi = sorted((scale * (iv.lo - shift), scale * (iv.hi - shift)))
    est = scale * (iv.estimate - shift) if math.isfinite(iv.estimate) else (lo + hi) / 2
    return {"label": label, "estimate": est, "lo": lo, "hi": hi, "outcome": d.outcome, "units": units, "note": note}


def forest_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{label, estimate, lo, hi, outcome, delta}`` in units of delta, oriented so the claimed side is positive,
    for every directional decision of every row (compound rows contribute each directional part)."""
    pts = []
    for label, d in _decisions(rows):
        spec, iv = d.spec, d.interval
        if spec.get("form") == "directional" and iv is not None and iv.defined:
            s = (1.0 if spec["side"] == "positive" else -1.0) / spec["delta"]
            p = _point(label, d, s, 0.0, spec.get("units", ""), f"delta {spec['delta']:g} {spec.get('units', '')}")
            pts.append({**p, "delta": spec["delta"]})
    return pts


def bound_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every bound decision (and the ARC bar) as its margin to the bound in units of ``|bound|``, positive on the
    claimed side: the claim holds where the interval lies right of 0."""
    pts = []
    for label, d in _decisions(rows):
        spec, iv = d.spec, d.interval
        form = spec.get("form")
        if form not in ("bound", "bar") or iv is None or not iv.defined:
            continue
        b = float(spec["bound"] if form == "bound" else spec["bar"])
        side = spec.get("side", "above")
        size = abs(b) if b != 0 else 1.0
        s = (1.0 if side == "above" else -1.0) / size
        note = f"{side} {b:g} {spec.get('units', '')}".rstrip()
        pts.append(_point(label, d, s, b, spec.get("units", ""), note))
    return pts


def equivalence_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every equivalence decision as ``(q - value) / tol``: the claim holds where the interval lies in (-1, +1)."""
    pts = []
    for label, d in _decisions(rows):
        spec, iv = d.spec, d.interval
        if spec.get("form") == "equivalence" and iv is not None and iv.defined:
            note = f"{spec['value']:g} ± {spec['tol']:g} {spec.get('units', '')}".rstrip()
            pts.append(_point(label, d, 1.0 / spec["tol"], spec["value"], spec.get("units", ""), note))
    return pts


def _panel(ax, pts: list[dict[str, Any]], band: tuple[str, str] | None, xlabel: str, title: str) -> None:
    if band is not None:
        ax.axvspan(-1, 1, color=band[0], zorder=0, label=band[1])
    ax.axvline(0, color="k", lw=0.8)
    for i, p in enumerate(reversed(pts)):
        c = _COLOURS[p["outcome"]]
        lo, hi = max(p["lo"], -_CLIP), min(p["hi"], _CLIP)
        lo, hi = min(lo, _CLIP), max(hi, -_CLIP)
        ax.plot([lo, hi], [i, i], color=c, lw=2)
        if math.isfinite(p["estimate"]) and abs(p["estimate"]) <= _CLIP:
            ax.plot(p["estimate"], i, "o", color=c, ms=5)
        for end, clipped, marker in ((lo, p["lo"] < -_CLIP, "<"), (hi, p["hi"] > _CLIP, ">")):
            if clipped:
                ax.plot(end, i, marker, color=c, ms=6)
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels([f"{p['label']}  ({p['note']})" for p in reversed(pts)], fontsize=7)
    ax.set_ylim(-0.7, len(pts) - 0.3)
    ax.set_xlim(-_CLIP - 0.5, _CLIP + 0.5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    if band is not None:
        ax.legend(loc="lower right", fontsize=6.5, framealpha=0.9)


def forest_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Write the plot to ``path``; False (and no file) when no row has an interval to draw."""
    panels = [
        (forest_points(rows), ("#e0e0e0", "(-delta, +delta): too small to matter"),
         "effect / delta, claimed direction to the right (interval at the row's look level)",
         "Directional rows: the effect against the smallest effect of interest"),
        (bound_points(rows), None,
         "margin to the bound / |bound|, claimed side to the right (the claim holds right of 0)",
         "Bound rows: the quantity against its stated bound (ARC bar: the task score against 20%)"),
        (equivalence_points(rows), ("#e8f5e9", "(value - tol, value + tol): the claimed band"),
         "(quantity - claimed value) / tolerance (the claim holds inside the band)",
         "Equivalence rows: the quantity against the claimed value"),
    ]  # fmt: skip
    panels = [p for p in panels if p[0]]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [0.3 * len(p[0]) + 1.1 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
    for ax, (pts, band, xlabel, title) in zip(axes[:, 0], panels, strict=True):
        _panel(ax, pts, band, xlabel, title)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, marker="o", ms=4) for c in _COLOURS.values()]
    fig.legend(handles, list(_COLOURS), loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Claims ledger: every comparison row against its rule", fontsize=10, y=1.03)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return True

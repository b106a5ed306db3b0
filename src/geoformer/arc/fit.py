"""Final steps whose parameters are fitted to the demonstrations.

Given the grids a candidate program makes from the demonstration inputs and the demonstration outputs,
each fitter returns a step that maps every grid to its output exactly, or None:

* ``fit_recolor``: a consistent per-colour substitution (``recolor(map={a:b,...})``);
* ``fit_tiling``: the output is a rows x cols layout of D4 images of the grid or blank blocks
  (``tile_fit(rows=2, cols=2, ops=[id,fx1,fx0,r2])``), the cheapest element per block;
* ``fit_local``: a local rule (``local_rule(feat=..., table=...)``) passing leave-one-out.

``ColourMapCheck`` is the incremental form of ``fit_recolor`` the search uses to reject a candidate
after its first wrong demonstration.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from geoformer.arc.dsl import Step, run_step, step
from geoformer.arc.grid import ELEMENT_OF_CODE, OP_CODES, apply_d4
from geoformer.arc.rules import FEATURES, fit_table


class ColourMapCheck:
    """Feeds (grid, output) pairs one at a time; ``ok`` stays True while one colour map explains them."""

    __slots__ = ("lut", "ok")

    def __init__(self):
        self.lut = np.full(16, -1, dtype=np.int64)
        self.ok = True

    def add(self, g: np.ndarray, o: np.ndarray) -> bool:
        if not self.ok or g.shape != o.shape:
            self.ok = False
            return False
        pairs = np.unique(g.ravel().astype(np.int64) * 16 + o.ravel())
        a, b = pairs // 16, pairs % 16
        if len(np.unique(a)) != len(a):
            self.ok = False
            return False
        known = self.lut[a]
        if np.any((known >= 0) & (known != b)):
            self.ok = False
            return False
        self.lut[a] = b
        return True

    def step(self) -> Step | None:
        pairs = tuple((int(a), int(self.lut[a])) for a in range(16) if self.lut[a] >= 0 and self.lut[a] != a)
        if not self.ok or not pairs:
            return None
        return step("recolor", map=pairs)


def fit_recolor(grids, outs) -> Step | None:
    chk = ColourMapCheck()
    for g, o in zip(grids, outs, strict=True):
        if not chk.add(g, o):
            return None
    return chk.step()


def tiling_ratio(grids, outs) -> tuple[int, int] | None:
    """(rows, cols) if every output is the same whole multiple (not 1 x 1) of its grid."""
    r = None
    for g, o in zip(grids, outs, strict=True):
        (h, w), (oh, ow) = g.shape, o.shape
        if oh % h or ow % w:
            return None
        q = (oh // h, ow // w)
        if r is None:
            r = q
        elif q != r:
            return None
    if r is None or r == (1, 1) or r[0] * r[1] > 36:
        return None
    return r


_OP_ORDER = ("id", "fx1", "fx0", "r2", "tr", "atr", "r1", "r3")


def fit_tiling(grids, outs, bg: int = 0) -> Step | None:
    ratio = tiling_ratio(grids, outs)
    if ratio is None:
        return None
    rows, cols = ratio
    images = [{c: apply_d4(ELEMENT_OF_CODE[c], g) for c in OP_CODES} for g in grids]
    ops = []
    for i in range(rows):
        for j in range(cols):
            found = None
            for code in (*_OP_ORDER, "blank"):
                ok = True
                for g, o, im in zip(grids, outs, images, strict=True):
                    h, w = g.shape
                    block = o[i * h : (i + 1) * h, j * w : (j + 1) * w]
                    if code == "blank":
                        if not (block == bg).all():
                            ok = False
                            break
                        continue
                    t = im[code]
                    if t.shape != block.shape or not np.array_equal(t, block):
                        ok = False
                        break
                if ok:
                    found = code
                    break
            if found is None:
                return None
            ops.append(found)
    return step("tile_fit", rows=rows, cols=cols, ops=tuple(ops), bg=bg)


WEAK_MAX = 40  # a failing rule with more entries than this is memorisation, not kept at all


def fit_local(grids, outs, bg: int = 0, features=None, limit: int = 2) -> list[Step]:
    """Local rules that map every grid to its output: the first ``limit`` feature sets (cheapest first)
    whose rule passes leave-one-out, then the failing rule with the smallest table (``loo=0``, ranked
    much lower: a guess rather than an explanation)."""
    if any(g.shape != o.shape for g, o in zip(grids, outs, strict=True)):
        return []
    found, weak = [], None
    for k, feat in enumerate(FEATURES if features is None else features):
        r = fit_table(list(grids), list(outs), feat, bg, weak=True)
        if r is None:
            continue
        table, default, ok = r
        if ok:
            found.append(step("local_rule", feat=feat, table=table, default=default, bg=bg))
            if len(found) >= limit:
                break
        elif len(table) + len(default) <= WEAK_MAX and (
            weak is None or (len(table) + len(default), k) < weak[0]
        ):
            weak = (
                (len(table) + len(default), k),
                step("local_rule", feat=feat, table=table, default=default, bg=bg, loo=0),
            )
    return found + ([weak[1]] if weak is not None and not found else [])


def fixed_shape(outs) -> tuple[int, int] | None:
    shapes = {o.shape for o in outs}
    return shapes.pop() if len(shapes) == 1 else None


def fit_window(grids, outs) -> Step | None:
    """A fixed-size window at one offset from one corner of every grid (outputs of one shape, >= 2 cells)."""
    shape = fixed_shape(outs)
    if shape is None or shape[0] * shape[1] < 2:
        return None
    h, w = shape
    if any(g.shape[0] < h or g.shape[1] < w for g in grids) or all(g.shape == shape for g in grids):
        return None
    offsets: dict[str, set] | None = None
    for g, o in zip(grids, outs, strict=True):
        H, W = g.shape
        eq = (sliding_window_view(g, (h, w)) == o).all(axis=(2, 3))
        rs, cs = np.nonzero(eq)
        if rs.size == 0:
            return None
        here = {
            "tl": {(int(r), int(c)) for r, c in zip(rs, cs, strict=True)},
            "tr": {(int(r), int(W - w - c)) for r, c in zip(rs, cs, strict=True)},
            "bl": {(int(H - h - r), int(c)) for r, c in zip(rs, cs, strict=True)},
            "br": {(int(H - h - r), int(W - w - c)) for r, c in zip(rs, cs, strict=True)},
        }
        offsets = here if offsets is None else {a: offsets[a] & here[a] for a in here}
        if not any(offsets.values()):
            return None
    best = min((dr + dc, k, a, dr, dc) for k, a in enumerate(offsets) for dr, dc in offsets[a])
    _, _, anchor, dr, dc = best
    return step("crop_fixed", anchor=anchor, dr=dr, dc=dc, h=h, w=w)


def fit_period(grids, outs) -> list[Step]:
    """Continue each grid's periodic pattern to the (fixed) output size, then maybe a colour map."""
    shape = fixed_shape(outs)
    if shape is None or any(g.shape[0] > shape[0] or g.shape[1] > shape[1] for g in grids):
        return []
    if all(g.shape == shape for g in grids):
        return []
    s = step("period_extend", h=shape[0], w=shape[1])
    made = [run_step(s, g) for g in grids]
    if any(m is None for m in made):
        return []
    if all(np.array_equal(m, o) for m, o in zip(made, outs, strict=True)):
        return [s]
    r = fit_recolor(made, outs)
    return [s, r] if r is not None else []

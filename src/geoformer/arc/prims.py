"""The grid transforms of the DSL: pure functions ``f(grid, **params) -> grid | None``.

``None`` means "does not apply to this grid" (no separator line, an empty selection, a tie that a
selector cannot break...). Every function returns a new array or a read-only view of its input; none
writes into its input. ``bg`` is the background colour (the search passes the task's most common
colour). See :mod:`geoformer.arc.dsl` for the names, parameter types and searched values.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import ndimage

from geoformer.arc.grid import DT, S4, S8, apply_d4, colours, extreme_by, grid_key, objects, unique_by

# ----------------------------------------------------------------------------- crops


def _bbox(mask: np.ndarray):
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_bbox(g, bg=0):
    b = _bbox(g != bg)
    return None if b is None else g[b[0] : b[1], b[2] : b[3]]


def trim(g):
    """The grid without its outer ring of cells."""
    if g.shape[0] < 3 or g.shape[1] < 3:
        return None
    return g[1:-1, 1:-1]


HALVES = ("top", "bottom", "left", "right", "tl", "tr", "bl", "br")


def half(g, part="top"):
    """A half (``top``...) or quarter (``tl``...) of the grid; odd sides keep the middle line."""
    h, w = g.shape
    hh, hw = (h + 1) // 2, (w + 1) // 2
    rows = {"t": slice(0, hh), "b": slice(h - hh, h)}
    cols = {"l": slice(0, hw), "r": slice(w - hw, w)}
    if part in ("top", "bottom"):
        return g[rows[part[0]], :] if h > 1 else None
    if part in ("left", "right"):
        return g[:, cols[part[0]]] if w > 1 else None
    if h < 2 or w < 2:
        return None
    return g[rows[part[0]], cols[part[1]]]


def majority_colour(g, how="most", bg=0):
    """A 1 x 1 grid: the most (or least) common non-background colour."""
    counts = np.bincount(g.ravel(), minlength=10)[:10].astype(np.int64)
    counts[bg] = 0
    if counts.max() == 0:
        return None
    if how == "most":
        c = int(np.argmax(counts))
    else:
        c = int(np.argmin(np.where(counts > 0, counts, 10**6)))
    return np.full((1, 1), c, dtype=DT)


def crop_colour(g, c, bg=0):
    b = _bbox(g == c)
    return None if b is None else g[b[0] : b[1], b[2] : b[3]]


SELECTORS = (
    "largest",
    "smallest",
    "largest_bbox",
    "unique_shape",
    "unique_colour",
    "common_shape",
    "most_colours",
    "top",
    "bottom",
    "left",
    "right",
)


def select(objs, by: str, content_ties: bool):
    """One object by a criterion; a tie is broken only when ``content_ties`` and the tied objects look the
    same (then which one is taken does not change a crop), else None."""
    sc = (lambda o: o.content_key) if content_ties else None
    if by == "largest":
        return extreme_by(objs, lambda o: o.size, True, sc)
    if by == "smallest":
        return extreme_by(objs, lambda o: o.size, False, sc)
    if by == "largest_bbox":
        return extreme_by(objs, lambda o: o.bbox_area, True, sc)
    if by == "unique_shape":
        return unique_by(objs, lambda o: o.shape_key)
    if by == "unique_colour":
        return unique_by(objs, lambda o: o.colours)
    if by == "most_colours":
        return extreme_by(objs, lambda o: len(o.colours), True, sc)
    if by == "common_shape":
        counts = Counter(o.shape_key for o in objs)
        return extreme_by(objs, lambda o: counts[o.shape_key], True, sc)
    if by == "top":
        return extreme_by(objs, lambda o: o.r0, False, None)
    if by == "bottom":
        return extreme_by(objs, lambda o: o.r1, True, None)
    if by == "left":
        return extreme_by(objs, lambda o: o.c0, False, None)
    if by == "right":
        return extreme_by(objs, lambda o: o.c1, True, None)
    raise ValueError(f"unknown selector {by!r}")


def crop_object(g, by="largest", conn=8, multi=0, keep="obj", bg=0):
    """The bounding box of one object: only its cells (``keep=obj``) or the whole window (``window``)."""
    objs = objects(g, conn, bool(multi), bg)
    o = select(objs, by, content_ties=keep == "obj")
    if o is None:
        return None
    return o.sub if keep == "obj" else g[o.r0 : o.r1, o.c0 : o.c1]


def select_object(g, by="largest", conn=8, multi=0, bg=0):
    """The grid with only one object left (everything else background)."""
    objs = objects(g, conn, bool(multi), bg)
    o = select(objs, by, content_ties=False)
    if o is None or len(objs) < 2:
        return None
    out = np.full_like(g, bg)
    out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = o.sub[o.mask]
    return out


def drop_object(g, by="largest", conn=8, multi=0, bg=0):
    """The grid without one object."""
    objs = objects(g, conn, bool(multi), bg)
    o = select(objs, by, content_ties=False)
    if o is None:
        return None
    out = g.copy()
    out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = bg
    return out


def crop_marked(g, c=1, conn=8, bg=0):
    """The box of the one multicolour object that contains colour ``c`` and another colour."""
    objs = [o for o in objects(g, conn, True, bg) if c in o.colours and len(o.colours) > 1]
    if len(objs) != 1:
        return None
    o = objs[0]
    return g[o.r0 : o.r1, o.c0 : o.c1]


def recolour_objects(g, how="minority", conn=8, bg=0):
    """Each multicolour object painted all over with its least (``minority``) or most common colour."""
    objs = [o for o in objects(g, conn, True, bg) if len(o.colours) > 1]
    if not objs:
        return None
    out = g.copy()
    for o in objs:
        vals = o.sub[o.mask]
        counts = np.bincount(vals, minlength=10)[:10]
        present = [k for k in range(10) if counts[k]]
        pick = (
            min(present, key=lambda k: (counts[k], k))
            if how == "minority"
            else max(present, key=lambda k: (counts[k], -k))
        )
        out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = pick
    return out


def drop_small(g, k=1, conn=8, bg=0):
    """Remove every (multicolour) object of at most ``k`` cells: de-noising."""
    objs = objects(g, conn, True, bg)
    small = [o for o in objs if o.size <= k]
    if not small or len(small) == len(objs):
        return None
    out = g.copy()
    for o in small:
        out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = bg
    return out


# ----------------------------------------------------------------------------- colours


def keep_colour(g, c, bg=0):
    return np.where(g == c, g, DT(bg)).astype(DT)


def erase(g, c, bg=0):
    return np.where(g == c, DT(bg), g).astype(DT)


def recolor(g, map=()):  # noqa: A002 - the DSL's parameter name
    """A per-colour substitution; colours not in the map stay."""
    lut = np.arange(256, dtype=DT)
    for a, b in map:
        lut[a] = b
    return lut[g]


# ----------------------------------------------------------------------------- scale and tile


def shift(g, dir="down", bg=0):  # noqa: A002
    """Every cell moves one step in ``dir``; cells leaving the grid are lost, new ones are background."""
    dr, dc = DIRS[dir]
    return _shift(g, dr, dc, bg)


def swap2(g, bg=0):
    """Swap the two non-background colours of a grid that has exactly two."""
    cs = sorted(colours(g) - {bg})
    if len(cs) != 2:
        return None
    a, b = cs
    out = g.copy()
    out[g == a] = b
    out[g == b] = a
    return out


def upscale_ncolours(g, bg=0):
    """Upscale by the number of non-background colours."""
    k = len(colours(g) - {bg})
    if k < 2:
        return None
    return upscale(g, k, k)


def upscale(g, fy=2, fx=2):
    return np.repeat(np.repeat(g, fy, axis=0), fx, axis=1)


def downscale(g, fy=2, fx=2):
    """Each fy x fx block becomes its most common colour (the grid must split into whole blocks)."""
    h, w = g.shape
    if h % fy or w % fx or (fy == 1 and fx == 1):
        return None
    b = g.reshape(h // fy, fy, w // fx, fx)
    counts = (b[..., None] == np.arange(10, dtype=DT)).sum(axis=(1, 3))
    return counts.argmax(axis=-1).astype(DT)


def _run_gcd(a: np.ndarray, axis: int) -> int:
    """The gcd of the lengths of the runs of equal consecutive rows (axis 0) or columns (axis 1)."""
    lines = a if axis == 0 else a.T
    starts = np.flatnonzero((lines[1:] != lines[:-1]).any(axis=1)) + 1
    return int(np.gcd.reduce(np.diff(np.concatenate([[0], starts, [lines.shape[0]]]))))


def downscale_auto(g):
    """Undo a pixel upscaling: the largest block size for which the grid is made of uniform blocks."""
    fy, fx = _run_gcd(g, 0), _run_gcd(g, 1)
    if fy == 1 and fx == 1:
        return None
    return g[::fy, ::fx]


def tile(g, ny=2, nx=2, mode="plain"):
    """``ny x nx`` copies; ``mirror``: odd rows/columns of tiles flipped; ``mirror_rev``: even ones."""
    if mode == "plain":
        return np.tile(g, (ny, nx))
    odd = 1 if mode == "mirror" else 0
    rows = []
    for i in range(ny):
        row = []
        for j in range(nx):
            t = g
            if ny > 1 and i % 2 == odd:
                t = t[::-1, :]
            if nx > 1 and j % 2 == odd:
                t = t[:, ::-1]
            row.append(t)
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def self_kron(g, mode="nonbg", bg=0):
    """Each cell becomes a copy of the whole grid (``nonbg``: where the cell is not background; ``bg``:
    where it is; ``major``: where it has the grid's most common colour) or a background block."""
    h, w = g.shape
    if h * h > 30 or w * w > 30:
        return None
    if mode == "major":
        m = g == np.bincount(g.ravel(), minlength=10).argmax()
    elif isinstance(mode, int):
        m = g == mode
    else:
        m = (g != bg) if mode == "nonbg" else (g == bg)
    out = np.where(m[:, None, :, None], g[None, :, None, :], DT(bg))
    return out.reshape(h * h, w * w).astype(DT)


def kron_colour(g, c=1, bg=0):
    """``self_kron`` where the cell has colour ``c``."""
    if not (g == c).any():
        return None
    return self_kron(g, int(c), bg)


def as_row(g, bg=0):
    """The non-background cells in reading order, as one row."""
    v = g[g != bg]
    return v[None, :] if 0 < v.size <= 30 else None


def colour_list(g, order="desc", bg=0):
    """The non-background colours as a column, by cell count (``desc``: most first; ties: smaller colour)."""
    counts = np.bincount(g.ravel(), minlength=10)[:10]
    cs = [c for c in range(10) if counts[c] and c != bg]
    if not cs:
        return None
    cs.sort(key=lambda c: (-counts[c], c) if order == "desc" else (counts[c], c))
    return np.array(cs, dtype=DT)[:, None]


def line_majority(g, axis="rows"):
    """Each row (or column) takes its most common colour (ties: the smaller colour)."""
    a = g if axis == "rows" else g.T
    counts = (a[:, :, None] == np.arange(10, dtype=DT)).sum(axis=1)
    maj = counts.argmax(axis=1).astype(DT)
    out = np.repeat(maj[:, None], a.shape[1], axis=1)
    return out if axis == "rows" else out.T


def mirror_concat(g, side="right"):
    """The grid and its mirror image side by side (``right``/``left``) or stacked (``down``/``up``)."""
    if side == "right":
        return np.concatenate([g, g[:, ::-1]], axis=1)
    if side == "left":
        return np.concatenate([g[:, ::-1], g], axis=1)
    if side == "down":
        return np.concatenate([g, g[::-1, :]], axis=0)
    return np.concatenate([g[::-1, :], g], axis=0)


# ----------------------------------------------------------------------------- gravity, lines


def gravity(g, dir="down", bg=0):  # noqa: A002
    """Every non-background cell falls in ``dir`` until blocked (order within a line is kept)."""
    axis = 0 if dir in ("down", "up") else 1
    key = (g != bg) if dir in ("down", "right") else (g == bg)
    idx = np.argsort(key, axis=axis, kind="stable")
    out = np.take_along_axis(g, idx, axis=axis)
    return out


def sort_lines(g, axis="rows", order="asc", bg=0):
    """Rows (or columns) reordered by their count of non-background cells, ascending or descending; equal
    counts keep their order."""
    a = g if axis == "rows" else g.T
    n = (a != bg).sum(axis=1)
    idx = np.argsort(n if order == "asc" else -n, kind="stable")
    out = a[idx]
    return out if axis == "rows" else out.T


SLIDES = ("down", "up", "left", "right", "toward")
_STEP = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}


def _toward(mask: np.ndarray, rest: np.ndarray) -> str | None:
    """The cardinal direction from the cells of ``mask`` to those of ``rest``: along the axis on which
    their boxes do not overlap and do on the other (None if that is not exactly one axis)."""
    a, b = _bbox(mask), _bbox(rest)
    if a is None or b is None:
        return None
    rows_apart = a[1] <= b[0] or b[1] <= a[0]
    cols_apart = a[3] <= b[2] or b[3] <= a[2]
    if rows_apart == cols_apart:
        return None
    if rows_apart:
        return "down" if a[1] <= b[0] else "up"
    return "right" if a[3] <= b[2] else "left"


def slide(g, c=1, dir="toward", bg=0):  # noqa: A002
    """The cells of colour ``c`` move as one rigid body in ``dir`` until the next step would leave the
    grid or cover another non-background cell (``toward``: in the direction of the other cells). None if
    the body does not move."""
    mask = g == c
    rest = (g != bg) & ~mask
    if not mask.any():
        return None
    d = _toward(mask, rest) if dir == "toward" else dir
    if d is None:
        return None
    dr, dc = _STEP[d]
    rr, cc = np.nonzero(mask)
    h, w = g.shape
    k = 0
    while True:
        r2, c2 = rr + (k + 1) * dr, cc + (k + 1) * dc
        if r2.min() < 0 or c2.min() < 0 or r2.max() >= h or c2.max() >= w or rest[r2, c2].any():
            break
        k += 1
    if k == 0:
        return None
    out = np.where(mask, DT(bg), g).astype(DT)
    out[rr + k * dr, cc + k * dc] = c
    return out


DIRS = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
    "ul": (-1, -1),
    "ur": (-1, 1),
    "dl": (1, -1),
    "dr": (1, 1),
}
DIR_GROUPS = {
    "up": ("up",),
    "down": ("down",),
    "left": ("left",),
    "right": ("right",),
    "h": ("left", "right"),
    "v": ("up", "down"),
    "hv": ("up", "down", "left", "right"),
    "diag": ("ul", "ur", "dl", "dr"),
    "all": tuple(DIRS),
}


def _shift(a: np.ndarray, dr: int, dc: int, fill) -> np.ndarray:
    """``out[i, j] = a[i - dr, j - dc]`` (``fill`` off the grid)."""
    out = np.full_like(a, fill)
    h, w = a.shape
    src = a[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
    out[max(0, dr) : h - max(0, -dr), max(0, dc) : w - max(0, -dc)] = src
    return out


def ffill(g: np.ndarray, bg: int, axis: int, rev: bool) -> np.ndarray:
    """Per cell, the colour of the nearest non-background cell at or before it along ``axis`` (after it
    when ``rev``), -1 where there is none."""
    a = g if axis == 0 else g.T
    if rev:
        a = a[::-1]
    n = a.shape[0]
    idx = np.where(a != bg, np.arange(n)[:, None], -1)
    idx = np.maximum.accumulate(idx, axis=0)
    val = np.where(idx >= 0, np.take_along_axis(a, np.maximum(idx, 0), axis=0).astype(np.int16), -1)
    if rev:
        val = val[::-1]
    return val if axis == 0 else val.T


def _diag_ffill(g: np.ndarray, bg: int) -> np.ndarray:
    """``ffill`` along the down-right diagonals: the grid is sheared so each diagonal is one column."""
    h, w = g.shape
    ii = np.arange(h)[:, None]
    kk = np.arange(h + w - 1)[None, :]
    jj = ii + kk - (h - 1)
    inside = (jj >= 0) & (jj < w)
    t = np.where(inside, g[ii, np.clip(jj, 0, w - 1)], DT(bg)).astype(DT)
    v = ffill(t, bg, 0, False)
    out = np.empty((h, w), dtype=np.int16)
    ri, ci = np.nonzero(inside)
    out[ri, jj[ri, ci]] = v[ri, ci]
    return out


_CARDINAL = {"down": (0, False), "up": (0, True), "right": (1, False), "left": (1, True)}


_MEMO: dict = {}


def _memo(key, fn):
    """A per-process memo for intermediate arrays shared by many parameter settings of one grid."""
    hit = _MEMO.get(key)
    if hit is None:
        if len(_MEMO) > 20_000:
            _MEMO.clear()
        hit = _MEMO[key] = fn()
    return hit


def _ray(g: np.ndarray, d: str, bg: int, only: int) -> np.ndarray:
    """Colours rays in direction ``d`` would paint (-1: none); rays start at non-background cells (of
    colour ``only`` if >= 0) and stop at the next non-background cell."""
    val = _memo(("ray", grid_key(g), d, bg), lambda: _ray_any(g, d, bg))
    if only >= 0:
        val = np.where(val == only, val, -1)
    return val


def _ray_any(g: np.ndarray, d: str, bg: int) -> np.ndarray:
    if d in _CARDINAL:
        val = ffill(g, bg, *_CARDINAL[d])
    else:
        a = g[::-1] if d[0] == "u" else g
        a = a[:, ::-1] if d[1] == "l" else a
        val = _diag_ffill(a, bg)
        val = val[::-1] if d[0] == "u" else val
        val = val[:, ::-1] if d[1] == "l" else val
    return val


def extend(g, dir="hv", only=-1, bg=0):  # noqa: A002
    """Every non-background cell (of colour ``only``, or any for -1) shoots rays over background cells in
    the directions ``dir`` until they meet a non-background cell or the border. Earlier directions in the
    group win where rays cross."""
    if only >= 0 and not (g == only).any():
        return None
    out = g.copy()
    for d in DIR_GROUPS[dir]:
        r = _ray(g, d, bg, only)
        paint = (out == bg) & (r >= 0)
        out[paint] = r[paint]
    return out


def _between(g: np.ndarray, bg: int, line: str) -> np.ndarray:
    """Per background cell, the colour of the two nearest non-background cells on both sides along a
    line (``h``, ``v``, ``d`` down-right diagonal, ``a`` anti-diagonal) when they are equal, else -1."""
    if line in ("h", "v"):
        ax = 1 if line == "h" else 0
        before, after = ffill(g, bg, ax, False), ffill(g, bg, ax, True)
    else:
        a = g if line == "d" else g[:, ::-1]
        before = _diag_ffill(a, bg)
        after = _diag_ffill(a[::-1, ::-1], bg)[::-1, ::-1]
        if line == "a":
            before, after = before[:, ::-1], after[:, ::-1]
    return np.where((g == bg) & (before >= 0) & (before == after), before, -1)


_CONNECT = {"hv": "hv", "vh": "vh", "h": "h", "v": "v", "diag": "da", "all": "hvda"}


def connect(g, axis="hv", c="same", bg=0):
    """Fill the background between two same-coloured cells of one row (``h``), column (``v``), diagonal
    (``diag``) or several (``hv``: rows first; ``vh``: columns first; ``all``), with their colour
    (``same``) or colour ``c``."""
    out = g.copy()
    for line in _CONNECT[axis]:
        b = _memo(("between", grid_key(g), bg, line), lambda line=line: _between(g, bg, line))
        m = (out == bg) & (b >= 0)
        out[m] = b[m] if c == "same" else c
    return out


def lines(g, axis="h", only=-1, bg=0):
    """Full rows (``h``), columns (``v``) or both through every cell of colour ``only`` (any non-background
    colour for -1), drawn over everything in reading order of the cells (rows first for ``hv``)."""
    src = (g != bg) if only < 0 else (g == only)
    if not src.any():
        return None
    out = g.copy()
    if axis in ("h", "hv"):  # a row takes the colour of its last source cell (the last one drawn)
        rows = np.flatnonzero(src.any(axis=1))
        last = src.shape[1] - 1 - np.argmax(src[rows, ::-1], axis=1)
        out[rows, :] = g[rows, last][:, None]
    if axis in (
        "v",
        "hv",
    ):  # columns are drawn after rows; in reading order a column's last cell is its lowest
        cols = np.flatnonzero(src.any(axis=0))
        last = src.shape[0] - 1 - np.argmax(src[::-1, cols], axis=0)
        out[:, cols] = g[last, cols][None, :]
    return out


# ----------------------------------------------------------------------------- fill, outline


def enclosed_mask(g: np.ndarray, bg: int) -> np.ndarray:
    """Background cells that are not 4-connected to the border through background."""
    free = g == bg
    lab, n = ndimage.label(free, structure=S4)
    if n == 0:
        return free
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return free & ~np.isin(lab, border)


def _paint(g: np.ndarray, mask: np.ndarray, c: int) -> np.ndarray | None:
    """A copy of ``g`` with the cells of ``mask`` set to ``c``; None (no change to offer) if ``mask`` is empty."""
    if not mask.any():
        return None
    out = g.copy()
    out[mask] = c
    return out


def fill_enclosed(g, c=1, bg=0):
    return _paint(g, enclosed_mask(g, bg), c)


def outline(g, c=1, conn=8, bg=0):
    """Background cells next to (4- or 8-neighbours of) a non-background cell take colour ``c``."""
    fg = g != bg
    return _paint(g, ndimage.binary_dilation(fg, structure=S8 if conn == 8 else S4) & ~fg, c)


def hollow(g, bg=0):
    """Interior cells (all four neighbours inside the grid and of the cell's colour) become background."""
    h, w = g.shape
    if h < 3 or w < 3:
        return None
    inner = np.zeros_like(g, dtype=bool)
    core = g[1:-1, 1:-1]
    inner[1:-1, 1:-1] = (
        (core != bg)
        & (g[:-2, 1:-1] == core)
        & (g[2:, 1:-1] == core)
        & (g[1:-1, :-2] == core)
        & (g[1:-1, 2:] == core)
    )
    return _paint(g, inner, bg)


def draw_border(g, c=1):
    out = g.copy()
    out[0, :] = c
    out[-1, :] = c
    out[:, 0] = c
    out[:, -1] = c
    return out


def fill_bbox(g, c=1, conn=8, bg=0):
    """Background cells inside each (multicolour) object's bounding box take colour ``c``."""
    objs = objects(g, conn, True, bg)
    if not objs:
        return None
    out = g.copy()
    for o in objs:
        win = out[o.r0 : o.r1, o.c0 : o.c1]
        win[win == bg] = c
    return out


# ----------------------------------------------------------------------------- structure


def _dedup_lines(g: np.ndarray) -> np.ndarray:
    keep = np.ones(g.shape[0], dtype=bool)
    keep[1:] = (g[1:] != g[:-1]).any(axis=1)
    return g[keep]


def compress(g, axis="both"):
    """Remove rows, columns or both that repeat the line before them."""
    out = g
    if axis in ("rows", "both"):
        out = _dedup_lines(out)
    if axis in ("cols", "both"):
        out = _dedup_lines(out.T).T
    return out


def drop_empty(g, axis="both", bg=0):
    """Remove rows / columns that are all background."""
    out = g
    if axis in ("rows", "both"):
        out = out[(out != bg).any(axis=1)]
    if axis in ("cols", "both") and out.size:
        out = out[:, (out != bg).any(axis=0)]
    return out if out.size else None


# ----------------------------------------------------------------------------- splits


def _uniform_lines(g: np.ndarray, c: int):
    rows = np.flatnonzero((g == c).all(axis=1)).tolist()
    cols = np.flatnonzero((g == c).all(axis=0)).tolist()
    return rows, cols


_PIECES: dict = {}


def pieces(g: np.ndarray, split: str, bg: int = 0):
    """Memoised :func:`split_pieces` (many split primitives ask for the same pieces of one grid)."""
    key = (grid_key(g), split, bg)
    if key not in _PIECES:
        if len(_PIECES) > 20_000:
            _PIECES.clear()
        _PIECES[key] = split_pieces(g, split, bg)
    return _PIECES[key]


def _bands(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for k in [*cuts, n]:
        if k > start:
            out.append((start, k))
        start = k + 1
    return out


def separator_bands(g: np.ndarray, bg: int):
    """Row and column bands between separator lines: full rows / columns of one non-background colour.
    Of the candidate colours, the one cutting the grid into the most pieces wins; ties go to a colour
    found only on its lines, then to more lines, then to the smaller colour. None if no colour cuts."""
    ur = (g == g[:, :1]).all(axis=1)
    uc = (g == g[:1, :]).all(axis=0)
    cand = Counter(g[ur, 0].tolist()) + Counter(g[0, uc].tolist())
    cand.pop(bg, None)
    best, best_key = None, None
    for c in sorted(cand):
        rows, cols = _uniform_lines(g, c)
        rb, cb = _bands(g.shape[0], rows), _bands(g.shape[1], cols)
        n = len(rb) * len(cb)
        if n < 2:
            continue
        on_lines = int((g == c).sum()) == int(
            len(rows) * g.shape[1] + len(cols) * g.shape[0] - len(rows) * len(cols)
        )
        key = (n, on_lines, cand[c])
        if best_key is None or key > best_key:
            best, best_key = (rb, cb), key
    return best


def split_pieces(g: np.ndarray, split: str, bg: int = 0):
    """Sub-grids of ``g`` in reading order: ``sep`` (cut along full lines of one non-background colour),
    ``sepbg`` (cut along empty lines, dropping empty pieces), ``half0`` / ``half1`` (two halves, a
    one-line middle separator skipped), ``quad`` (2 x 2), ``third0`` / ``third1``. None if it does not
    apply or gives fewer than 2 pieces."""
    h, w = g.shape
    if split in ("sep", "sepbg"):
        if split == "sep":
            found = separator_bands(g, bg)
            if found is None:
                return None
            rb, cb = found
        else:
            rows, cols = _uniform_lines(g, bg)
            rb, cb = _bands(h, rows), _bands(w, cols)
        out = [g[a:b, p:q] for a, b in rb for p, q in cb]
        if split == "sepbg":
            out = [p for p in out if (p != bg).any()]
        return out if len(out) >= 2 else None
    if split in ("half0", "half1", "third0", "third1"):
        n = 2 if split.startswith("half") else 3
        a = g if split.endswith("0") else g.T
        m = a.shape[0]
        if m % n == 0:
            s = m // n
            parts = [a[i * s : (i + 1) * s] for i in range(n)]
        elif (m - (n - 1)) % n == 0 and m > n:
            s = (m - (n - 1)) // n
            parts = [a[i * (s + 1) : i * (s + 1) + s] for i in range(n)]
            seps = [a[i * (s + 1) + s] for i in range(n - 1)]
            if not all((line == line[0]).all() for line in seps):
                return None
        else:
            return None
        return parts if split.endswith("0") else [p.T for p in parts]
    if split == "quad":
        top = pieces(g, "half0", bg)
        if top is None:
            return None
        out = []
        for t in top:
            q = pieces(t, "half1", bg)
            if q is None:
                return None
            out.extend(q)
        return out
    raise ValueError(f"unknown split {split!r}")


BROADCASTS = ("overlay", "fullest")


def split_broadcast(g, how="overlay", bg=0):
    """Every piece between separator lines (equal shapes) replaced by one piece made from all of them, the
    separators kept: ``overlay`` (each cell's non-background value, if the pieces that have one agree) or
    ``fullest`` (the piece with the most non-background cells, if exactly one has most)."""
    found = separator_bands(g, bg)
    if found is None:
        return None
    rb, cb = found
    if len({b - a for a, b in rb}) != 1 or len({q - p for p, q in cb}) != 1:
        return None
    stack = np.stack([g[a:b, p:q] for a, b in rb for p, q in cb])  # (pieces, h, w)
    filled = stack != bg
    if how == "overlay":
        top = stack.max(axis=0)
        low = np.where(filled, stack, DT(255)).min(axis=0)
        if not (top[filled.any(axis=0)] == low[filled.any(axis=0)]).all():
            return None  # pieces disagree on a cell
        piece = np.where(filled.any(axis=0), top, DT(bg)).astype(DT)
    else:
        counts = filled.sum(axis=(1, 2))
        if (counts == counts.max()).sum() != 1:
            return None
        piece = stack[int(np.argmax(counts))]
    out = g.copy()
    for a, b in rb:
        for p, q in cb:
            out[a:b, p:q] = piece
    return out


def split_summary(g, split="sep", how="majority", bg=0):
    """One cell per piece, laid out like the pieces: the piece's most common colour (``majority``) or its
    most common non-background colour (``nonbg``, background if none)."""
    if split != "sep":
        return None
    found = separator_bands(g, bg)
    if found is None:
        return None
    rb, cb = found
    if len(rb) * len(cb) < 2:
        return None
    out = np.empty((len(rb), len(cb)), dtype=DT)
    for i, (a, b) in enumerate(rb):
        for j, (p, q) in enumerate(cb):
            counts = np.bincount(g[a:b, p:q].ravel(), minlength=10)[:10]
            if how == "nonbg":
                counts = counts.copy()
                counts[bg] = 0
                out[i, j] = int(np.argmax(counts)) if counts.max() > 0 else bg
            else:
                out[i, j] = int(np.argmax(counts))
    return out


def _classes_ok(g: np.ndarray, known: np.ndarray, cls: np.ndarray, n: int) -> bool:
    """Every class has a known cell and all known cells of a class agree."""
    c = cls[known]
    v = g[known].astype(np.int64)
    n_cls = len(np.unique(c))
    return n_cls == n and len(np.unique(c * 16 + v)) == n_cls


def _diag_constant(g: np.ndarray, known: np.ndarray, anti: bool) -> bool:
    """Known cells agree with their known neighbour along every (anti-)diagonal."""
    if anti:
        a, b, ka, kb = g[:-1, 1:], g[1:, :-1], known[:-1, 1:], known[1:, :-1]
    else:
        a, b, ka, kb = g[:-1, :-1], g[1:, 1:], known[:-1, :-1], known[1:, 1:]
    both = ka & kb
    return bool(both.any()) and bool(np.array_equal(a[both], b[both]))


def period_complete(g, mask=0):
    """Fill the ``mask`` cells from the smallest lattice period that every known cell agrees with:
    rectangular periods (py, px), or stripes along diagonals ((i + j) or (i - j) modulo p)."""
    known = g != mask
    if known.all() or not known.any():
        return None
    h, w = g.shape
    ii, jj = np.indices(g.shape)

    def shifts(n, axis):
        ok = []
        for p in range(1, n):
            a = g[:-p] if axis == 0 else g[:, :-p]
            b = g[p:] if axis == 0 else g[:, p:]
            ka = known[:-p] if axis == 0 else known[:, :-p]
            kb = known[p:] if axis == 0 else known[:, p:]
            both = ka & kb
            if both.any() and np.array_equal(a[both], b[both]):
                ok.append(p)
        ok.append(n)
        return ok

    pys, pxs = shifts(h, 0), shifts(w, 1)
    cands = [(py * px, 0, py, px) for py in pys for px in pxs if 2 * py <= h or 2 * px <= w]
    for kind, anti in ((1, True), (2, False)):
        if _diag_constant(g, known, anti):
            cands.extend((p, kind, p, 0) for p in range(2, h + w))
    cands.sort()
    for n, kind, a, b in cands[:60]:
        if kind == 0:
            cls = (ii % a) * b + (jj % b)
        elif kind == 1:
            cls = (ii + jj) % a
        else:
            cls = (ii - jj) % a
        if _classes_ok(g, known, cls, n):
            lut = np.zeros(n, dtype=DT)
            lut[cls[known]] = g[known]
            out = g.copy()
            out[~known] = lut[cls[~known]]
            return out
    return None


def _equal_pieces(g, split, bg):
    ps = pieces(g, split, bg)
    if ps is None or len({p.shape for p in ps}) != 1:
        return None
    return ps


LOGIC_OPS = ("and", "or", "xor", "minus", "rminus", "nor")


def split_logic(g, split="half1", op="and", c=1, bg=0):
    """Two equal pieces as masks (non-background cells) combined by a logical op; true cells get colour
    ``c``, the others background. ``minus`` = first and not second; ``rminus`` = second and not first."""
    ps = _equal_pieces(g, split, bg)
    if ps is None or len(ps) != 2:
        return None
    a, b = ps[0] != bg, ps[1] != bg
    m = {
        "and": a & b,
        "or": a | b,
        "xor": a ^ b,
        "minus": a & ~b,
        "rminus": b & ~a,
        "nor": ~(a | b),
    }[op]
    return np.where(m, DT(c), DT(bg)).astype(DT)


def split_overlay(g, split="half1", order="fwd", bg=0):
    """Equal pieces stacked: non-background cells of later pieces cover earlier ones (``rev``: reversed;
    a string of piece indices such as ``p2031``: that order, bottom first)."""
    ps = _equal_pieces(g, split, bg)
    if ps is None:
        return None
    if order == "rev":
        ps = ps[::-1]
    elif order.startswith("p"):
        idx = [int(ch) for ch in order[1:]]
        if len(idx) != len(ps):
            return None
        ps = [ps[i] for i in idx]
    out = ps[0].copy()
    for p in ps[1:]:
        m = p != bg
        out[m] = p[m]
    return out


PICKS = (
    "same",
    "unique",
    "unique_mask",
    "unique_colours",
    "most_cells",
    "least_cells",
    "most_colours",
    "least_colours",
)


def split_pick(g, split="sep", by="unique", bg=0):
    """One of the pieces: the one whose content (or mask) occurs once, or an extreme of the count of
    non-background cells or of distinct colours."""
    ps = pieces(g, split, bg)
    if ps is None:
        return None
    if by == "same":
        return ps[0] if len({grid_key(p) for p in ps}) == 1 else None
    if by == "unique":
        return unique_by(ps, grid_key)
    if by == "unique_mask":
        return unique_by(ps, lambda p: grid_key((p != bg).astype(DT)))
    if by == "unique_colours":
        return unique_by(ps, lambda p: frozenset(colours(p) - {bg}))
    if by in ("most_cells", "least_cells"):
        return extreme_by(ps, lambda p: int((p != bg).sum()), by == "most_cells", grid_key)
    return extreme_by(ps, lambda p: len(colours(p) - {bg}), by == "most_colours", grid_key)


# ----------------------------------------------------------------------------- symmetry completion


def _sym_maps(kind: str, h: int, w: int, sr: int, sc: int):
    """Index maps ``(I, J)`` of the non-identity elements of a symmetry group about the doubled centre
    (sr, sc) = (2 * centre row, 2 * centre column)."""
    ii, jj = np.indices((h, w))
    lr = (ii, sc - jj)
    ud = (sr - ii, jj)
    r180 = (sr - ii, sc - jj)
    if kind == "lr":
        return [lr]
    if kind == "ud":
        return [ud]
    if kind == "both":
        return [lr, ud, r180]
    if kind == "rot180":
        return [r180]
    if (sr - sc) % 2:
        return None
    d = (sr - sc) // 2
    s = (sr + sc) // 2
    tr = (jj + d, ii - d)
    atr = (s - jj, s - ii)
    r90 = ((sr + 2 * jj - sc) // 2, (sc - 2 * ii + sr) // 2)
    r270 = ((sr - 2 * jj + sc) // 2, (sc + 2 * ii - sr) // 2)
    if kind == "transpose":
        return [tr]
    if kind == "antitranspose":
        return [atr]
    if kind == "rot90":
        return [r90, r180, r270]
    if kind == "d4":
        return [lr, ud, r180, tr, atr, r90, r270]
    raise ValueError(f"unknown symmetry {kind!r}")


def _agreement(g: np.ndarray, known: np.ndarray, maps) -> tuple[int, int]:
    h, w = g.shape
    ii, jj = np.indices(g.shape)
    agree = conflict = 0
    for mi, mj in maps:
        ok = (mi >= 0) & (mi < h) & (mj >= 0) & (mj < w)
        ti, tj = np.where(ok, mi, 0), np.where(ok, mj, 0)
        both = ok & known & known[ti, tj] & ((ti != ii) | (tj != jj))
        eq = g == g[ti, tj]
        agree += int((both & eq).sum())
        conflict += int((both & ~eq).sum())
    return agree, conflict


SYMS = ("lr", "ud", "both", "rot180", "transpose", "antitranspose", "rot90", "d4")
MIN_AGREE = 0.5  # a fitted symmetry must pair at least this fraction of the known cells with equal cells


def _onehots(g: np.ndarray, mask: int) -> np.ndarray:
    cs = sorted(colours(g) - {mask})
    return np.stack([(g == c) for c in cs]).astype(np.float64) if cs else np.zeros((0, *g.shape))


def _mirror_scores(g: np.ndarray, mask: int, axis: int):
    """For every doubled mirror position s along ``axis`` (cell j <-> s - j): the number of known cells
    whose mirror is equal, and of those whose mirror is known but different."""
    a = g if axis == 1 else g.T
    k = _onehots(a, mask)
    w = a.shape[1]
    kk = k.reshape(-1, w)
    agree_m = kk.T @ kk
    known = (a != mask).astype(np.float64)
    pairs_m = known.T @ known
    np.fill_diagonal(agree_m, 0)
    np.fill_diagonal(pairs_m, 0)
    jk = np.add.outer(np.arange(w), np.arange(w)).ravel()
    agree = np.bincount(jk, weights=agree_m.ravel(), minlength=2 * w - 1)
    pairs = np.bincount(jk, weights=pairs_m.ravel(), minlength=2 * w - 1)
    return np.rint(agree), np.rint(pairs - agree)


def _best_1d(g, mask, axis, n_known):
    agree, conflict = _mirror_scores(g, mask, axis)
    score = np.where(conflict == 0, agree, -1)
    s = int(np.argmax(score))
    return s if score[s] >= max(1.0, MIN_AGREE * n_known) else None


def _conv_full(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full 2-D convolutions of the stacks a, b (C, H, W), summed over C."""
    h, w = a.shape[-2:]
    shape = (2 * h - 1, 2 * w - 1)
    fa = np.fft.rfft2(a, s=shape)
    fb = np.fft.rfft2(b, s=shape)
    return np.rint(np.fft.irfft2((fa * fb).sum(axis=0), s=shape))


def _best_centre(g, mask, n_known):
    """The doubled centre (sr, sc) of the best conflict-free point reflection (rot180)."""
    k = _onehots(g, mask)
    if k.shape[0] == 0:
        return None
    known = (g != mask).astype(np.float64)[None]
    agree = _conv_full(k, k)
    pairs = _conv_full(known, known)
    agree[::2, ::2] -= known[0]
    pairs[::2, ::2] -= known[0]
    score = np.where(pairs - agree == 0, agree, -1)
    sr, sc = np.unravel_index(int(np.argmax(score)), score.shape)
    return (int(sr), int(sc)) if score[sr, sc] >= max(1.0, MIN_AGREE * n_known) else None


def _fit_centre(g: np.ndarray, known: np.ndarray, kind: str):
    h, w = g.shape
    n_known = float(known.sum())
    mask_colour = int(g[~known][0])  # the colour of the unknown cells
    if kind == "lr":
        s = _best_1d(g, mask_colour, 1, n_known)
        return None if s is None else (h - 1, s)
    if kind == "ud":
        s = _best_1d(g, mask_colour, 0, n_known)
        return None if s is None else (s, w - 1)
    if kind == "both":
        a = _best_1d(g, mask_colour, 1, n_known)
        b = _best_1d(g, mask_colour, 0, n_known)
        return None if a is None or b is None else (b, a)
    if kind in ("rot180", "rot90", "d4"):
        c = _best_centre(g, mask_colour, n_known)
        if c is None or kind == "rot180":
            return c
        maps = _sym_maps(kind, h, w, *c)
        if maps is None:
            return None
        agree, conflict = _agreement(g, known, maps)
        return c if conflict == 0 and agree >= MIN_AGREE * n_known * len(maps) else None
    best, best_score = None, 0.0
    for a in range(-3, 4):
        centre = (h - 1 + a, w - 1 - a) if kind == "transpose" else (h - 1 + a, w - 1 + a)
        maps = _sym_maps(kind, h, w, *centre)
        if maps is None:
            continue
        agree, conflict = _agreement(g, known, maps)
        if conflict == 0 and agree > best_score:
            best, best_score = centre, agree
    return best if best_score >= max(1.0, MIN_AGREE * n_known) else None


def _complete(g: np.ndarray, sym: str, mask: int):
    known = g != mask
    if known.all() or not known.any():
        return None
    h, w = g.shape
    centre = _fit_centre(g, known, sym)
    if centre is None:
        return None
    maps = _sym_maps(sym, h, w, *centre)
    out, kn = g.copy(), known.copy()
    for _ in range(4):
        changed = False
        for mi, mj in maps:
            ok = (mi >= 0) & (mi < h) & (mj >= 0) & (mj < w)
            ti, tj = np.where(ok, mi, 0), np.where(ok, mj, 0)
            take = ok & ~kn & kn[ti, tj]
            if take.any():
                out[take] = out[ti[take], tj[take]]
                kn = kn | take
                changed = True
        if not changed or kn.all():
            break
    if np.array_equal(kn, known):
        return None
    return out, known


_SYM_CACHE: dict = {}


def clear_caches() -> None:
    """Forget memoised intermediate results (the search calls this once per task)."""
    from geoformer.arc.grid import _OBJ_CACHE

    _MEMO.clear()
    _PIECES.clear()
    _SYM_CACHE.clear()
    _OBJ_CACHE.clear()


def _complete_cached(g, sym, mask):
    key = (grid_key(g), sym, mask)
    if key not in _SYM_CACHE:
        if len(_SYM_CACHE) > 20_000:
            _SYM_CACHE.clear()
        _SYM_CACHE[key] = _complete(g, sym, mask)
    return _SYM_CACHE[key]


def sym_complete(g, sym="lr", mask=0):
    """Fill cells of colour ``mask`` so the grid becomes symmetric under ``sym`` (mirror axes and centres
    are fitted to the known cells: the most agreeing ones with no conflict)."""
    r = _complete_cached(g, sym, mask)
    return None if r is None else r[0]


def sym_patch(g, sym="lr", mask=0):
    """Like ``sym_complete``, but only the box that held the ``mask`` cells."""
    r = _complete_cached(g, sym, mask)
    if r is None:
        return None
    out, known = r
    b = _bbox(~known)
    return out[b[0] : b[1], b[2] : b[3]]


def crop_fixed(g, anchor="tl", dr=0, dc=0, h=1, w=1):
    """The h x w window at offset (dr, dc) from a corner (``tl``, ``tr``, ``bl``, ``br``) of the grid."""
    H, W = g.shape
    r0 = dr if anchor[0] == "t" else H - h - dr
    c0 = dc if anchor[1] == "l" else W - w - dc
    if r0 < 0 or c0 < 0 or r0 + h > H or c0 + w > W:
        return None
    return g[r0 : r0 + h, c0 : c0 + w]


def min_period(g: np.ndarray, axis: int) -> int:
    a = g if axis == 0 else g.T
    n = a.shape[0]
    for p in range(1, n):
        if np.array_equal(a[p:], a[:-p]):
            return p
    return n


def period_extend(g, h=1, w=1):
    """The grid continued to h x w by repeating its smallest row and column periods."""
    py, px = min_period(g, 0), min_period(g, 1)
    base = g[:py, :px]
    reps = (-(-h // py), -(-w // px))
    return np.tile(base, reps)[:h, :w]


def tile_fit(g, rows=2, cols=2, ops=(), bg=0):
    """A rows x cols layout of D4 images of the grid (``blank``: a background block)."""
    from geoformer.arc.grid import ELEMENT_OF_CODE

    h, w = g.shape
    out_rows = []
    for i in range(rows):
        row = []
        for j in range(cols):
            op = ops[i * cols + j]
            if op == "blank":
                row.append(np.full((h, w), bg, dtype=DT))
                continue
            t = apply_d4(ELEMENT_OF_CODE[op], g)
            if t.shape != (h, w):
                return None
            row.append(t)
        out_rows.append(np.concatenate(row, axis=1))
    return np.concatenate(out_rows, axis=0)

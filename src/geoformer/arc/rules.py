"""Local rules: an output cell's colour as a lookup table of features of the input cell.

A feature set (``FEATURES``) turns a grid into one integer key per cell (mixed radix over a few
components, the cell's own colour first). ``fit_table`` learns ``key -> colour`` from demonstration
pairs of equal shape; it fails when one key would need two colours. Entries that keep the cell's own
colour are left out of the table, and a key the table lacks keeps its colour, so a rule is printed
as only its changes, e.g. ``local_rule(feat=n4, table={(0,1,1,0,0):2})``.

The search accepts a rule only if it passes leave-one-out on the demonstrations (fitted on all but
one pair, it predicts the left-out output exactly), which rejects tables that merely memorise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from geoformer.arc.grid import S4, S8, objects
from geoformer.arc.prims import enclosed_mask, ffill

OUT = 10  # a neighbour off the grid


def _pad(g: np.ndarray) -> np.ndarray:
    return np.pad(g.astype(np.int64), 1, constant_values=OUT)


def _neighbours(g: np.ndarray, offsets) -> list[np.ndarray]:
    p = _pad(g)
    h, w = g.shape
    return [p[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in offsets]


N4 = ((-1, 0), (1, 0), (0, -1), (0, 1))
N8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _comp_sizes(g: np.ndarray, bg: int, conn: int) -> np.ndarray:
    out = np.zeros(g.shape, dtype=np.int64)
    for o in objects(g, conn, False, bg):
        out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = min(o.size, 30)
    return out


def _size_rank(g: np.ndarray, bg: int) -> np.ndarray:
    objs = objects(g, 8, False, bg)
    sizes = sorted({o.size for o in objs}, reverse=True)
    rank = {s: min(i, 9) for i, s in enumerate(sizes)}
    out = np.full(g.shape, 10, dtype=np.int64)
    for o in objs:
        out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = rank[o.size]
    return out


def _touches_border(g: np.ndarray, bg: int) -> np.ndarray:
    h, w = g.shape
    out = np.zeros(g.shape, dtype=np.int64)
    for o in objects(g, 8, False, bg):
        if o.r0 == 0 or o.c0 == 0 or o.r1 == h or o.c1 == w:
            out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = 1
    return out


def _ranks2(g: np.ndarray, bg: int) -> list[np.ndarray]:
    """Per cell of an object: its size rank from the largest and from the smallest, capped at 2."""
    objs = objects(g, 8, False, bg)
    sizes = sorted({o.size for o in objs})
    big = np.full(g.shape, 3, dtype=np.int64)
    small = np.full(g.shape, 3, dtype=np.int64)
    for o in objs:
        i = sizes.index(o.size)
        win_b = big[o.r0 : o.r1, o.c0 : o.c1]
        win_s = small[o.r0 : o.r1, o.c0 : o.c1]
        win_b[o.mask] = min(len(sizes) - 1 - i, 2)
        win_s[o.mask] = min(i, 2)
    return [big, small]


def _region(g: np.ndarray) -> list[np.ndarray]:
    """Per cell: the colours 4-adjacent to its one-colour 4-connected region (bitmask) and whether the
    region touches the border."""
    h, w = g.shape
    nb = np.zeros(g.shape, dtype=np.int64)
    border = np.zeros(g.shape, dtype=np.int64)
    for c in np.unique(g):
        lab, n = ndimage.label(g == c, structure=S4)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            m = lab[sl] == i
            r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
            c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
            big = np.zeros((r1 - r0, c1 - c0), dtype=bool)
            big[sl[0].start - r0 : sl[0].stop - r0, sl[1].start - c0 : sl[1].stop - c0] = m
            ring = ndimage.binary_dilation(big, structure=S4) & ~big
            bits = 0
            for v in np.unique(g[r0:r1, c0:c1][ring]):
                bits |= 1 << int(v)
            nb[sl][m] = bits
            if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w:
                border[sl][m] = 1
    return [nb, border]


def _has_hole(g: np.ndarray, bg: int) -> np.ndarray:
    out = np.zeros(g.shape, dtype=np.int64)
    for o in objects(g, 8, False, bg):
        if o.mask.shape[0] >= 3 and o.mask.shape[1] >= 3:
            inner = ndimage.binary_fill_holes(o.mask) & ~o.mask
            if inner.any():
                out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = 1
    return out


def _freq_rank(g: np.ndarray) -> np.ndarray:
    counts = np.bincount(g.ravel(), minlength=10)[:10]
    order = sorted(range(10), key=lambda c: (-counts[c], c))
    rank = np.zeros(16, dtype=np.int64)
    for i, c in enumerate(order):
        rank[c] = min(i, 3)
    return rank[g]


def _rays(g: np.ndarray, bg: int) -> list[np.ndarray]:
    """Per cell and direction (up, down, left, right): the first non-background colour strictly beyond the
    cell (``OUT`` if none): the nearest one at or beyond (``ffill``) taken from the neighbour one step on."""
    res = []
    for axis, rev in ((0, False), (0, True), (1, False), (1, True)):
        v = ffill(g, bg, axis, rev).astype(np.int64)
        v[v < 0] = OUT
        near = [slice(None), slice(None)]
        far = [slice(None), slice(None)]
        near[axis], far[axis] = (
            (slice(1, None), slice(None, -1)) if not rev else (slice(None, -1), slice(1, None))
        )
        out = np.full(g.shape, OUT, dtype=np.int64)
        out[tuple(near)] = v[tuple(far)]
        res.append(out)
    return res


def _line_masks(g: np.ndarray, bg: int) -> tuple[np.ndarray, np.ndarray]:
    bits = np.where(g != bg, 1 << g.astype(np.int64), 0)
    rows = np.bitwise_or.reduce(bits, axis=1)
    cols = np.bitwise_or.reduce(bits, axis=0)
    return np.broadcast_to(rows[:, None], g.shape), np.broadcast_to(cols[None, :], g.shape)


def _components(g: np.ndarray, feat: str, bg: int) -> tuple[list[np.ndarray], list[int]]:
    own = g.astype(np.int64)
    if feat == "own":
        return [own], [11]
    if feat == "n4":
        return [own, *_neighbours(g, N4)], [11] * 5
    if feat == "n8":
        return [own, *_neighbours(g, N8)], [11] * 9
    if feat == "sets":
        bits = [np.where((n != bg) & (n != OUT), 1 << np.minimum(n, 9), 0) for n in _neighbours(g, N8)]
        diag = bits[0] | bits[2] | bits[5] | bits[7]
        orth = bits[1] | bits[3] | bits[4] | bits[6]
        return [own, orth, diag], [11, 1024, 1024]
    if feat == "n8z":
        return [own, *(np.where(n == OUT, bg, n) for n in _neighbours(g, N8))], [11] * 9
    if feat == "ranks":
        return [own, *_ranks2(g, bg)], [11, 4, 4]
    if feat == "region":
        return [own, *_region(g)], [11, 1024, 2]
    if feat == "holes":
        return [own, _has_hole(g, bg)], [11, 2]
    if feat == "freq":
        return [own, _freq_rank(g)], [11, 4]
    if feat == "mod3":
        ii, jj = np.indices(g.shape)
        return [own, ii % 3, jj % 3], [11, 3, 3]
    if feat == "count":
        fg = (g != bg).astype(np.int64)
        c4 = ndimage.convolve(fg, S4.astype(np.int64), mode="constant") - fg
        c8 = ndimage.convolve(fg, S8.astype(np.int64), mode="constant") - fg
        return [own, c4, c8], [11, 5, 9]
    if feat == "size4":
        return [own, _comp_sizes(g, bg, 4)], [11, 31]
    if feat == "size8":
        return [own, _comp_sizes(g, bg, 8)], [11, 31]
    if feat == "rank":
        return [own, _size_rank(g, bg)], [11, 11]
    if feat == "enclosed":
        return [own, enclosed_mask(g, bg).astype(np.int64)], [11, 2]
    if feat == "border":
        return [own, _touches_border(g, bg)], [11, 2]
    if feat == "rays":
        return [own, *_rays(g, bg)], [11] * 5
    if feat == "lines":
        r, c = _line_masks(g, bg)
        return [own, r, c], [11, 1024, 1024]
    if feat == "uniform":
        ur = (g == g[:, :1]).all(axis=1)
        uc = (g == g[:1, :]).all(axis=0)
        return [
            np.broadcast_to(ur[:, None], g.shape).astype(np.int64),
            np.broadcast_to(uc[None, :], g.shape).astype(np.int64),
        ], [2, 2]
    if feat == "parity":
        ii, jj = np.indices(g.shape)
        return [own, ii % 2, jj % 2], [11, 2, 2]
    raise ValueError(f"unknown feature set {feat!r}")


NO_OWN = ("uniform",)  # feature sets whose first component is not the cell's colour
FEATURES = (
    "n4",
    "sets",
    "uniform",
    "count",
    "size4",
    "size8",
    "rank",
    "ranks",
    "holes",
    "freq",
    "enclosed",
    "region",
    "border",
    "rays",
    "parity",
    "mod3",
    "lines",
    "n8",
    "n8z",
)
FEATURE_COST = {f: 0.1 * i for i, f in enumerate(FEATURES)}


def keys(g: np.ndarray, feat: str, bg: int = 0) -> tuple[np.ndarray, list[int]]:
    comps, radix = _components(g, feat, bg)
    k = np.zeros(g.shape, dtype=np.int64)
    for c, r in zip(comps, radix, strict=True):
        k = k * r + c
    return k, radix


def decode(key: int, radix: list[int]) -> tuple[int, ...]:
    parts = []
    for r in reversed(radix):
        key, v = divmod(key, r)
        parts.append(int(v))
    return tuple(reversed(parts))


def encode(parts, radix: list[int]) -> int:
    k = 0
    for v, r in zip(parts, radix, strict=True):
        k = k * r + int(v)
    return k


def _fit_arrays(ks: list[np.ndarray], ys: list[np.ndarray]) -> dict[int, int] | None:
    k = np.concatenate([a.ravel() for a in ks])
    y = np.concatenate([a.ravel() for a in ys]).astype(np.int64)
    order = np.argsort(k, kind="stable")
    k, y = k[order], y[order]
    same = k[1:] == k[:-1]
    if np.any(y[1:][same] != y[:-1][same]):
        return None
    first = np.concatenate([[True], ~same])
    return dict(zip(k[first].tolist(), y[first].tolist(), strict=True))


def _predict(k: np.ndarray, own: np.ndarray, table: dict[int, int], default=None) -> np.ndarray:
    """Table lookups; a key the table lacks gets ``default[own colour]`` (the own colour if no default)."""
    out = own.astype(np.int64)
    if default is not None:
        out = default[out]
    if not table:
        return out.astype(np.uint8)
    uk, inv = np.unique(k.ravel(), return_inverse=True)
    vals = np.array([table.get(int(u), -1) for u in uk], dtype=np.int64)[inv].reshape(k.shape)
    return np.where(vals >= 0, vals, out).astype(np.uint8)


def _defaults(inputs, outputs) -> np.ndarray:
    """Per own colour, the output colour most of its cells get (ties: the smaller colour)."""
    counts = np.zeros((16, 16), dtype=np.int64)
    for g, o in zip(inputs, outputs, strict=True):
        counts += np.bincount(g.ravel().astype(np.int64) * 16 + o.ravel(), minlength=256).reshape(16, 16)
    lut = np.arange(16, dtype=np.int64)
    seen = counts.sum(axis=1) > 0
    lut[seen] = counts[seen].argmax(axis=1)
    return lut


def _loo_ok(ks, inputs, outputs, use_default: bool) -> bool:
    for j in range(len(inputs)):
        rest = [i for i in range(len(inputs)) if i != j]
        t = _fit_arrays([ks[i] for i in rest], [outputs[i] for i in rest])
        if t is None:
            return False
        d = _defaults([inputs[i] for i in rest], [outputs[i] for i in rest]) if use_default else None
        if not np.array_equal(_predict(ks[j], inputs[j], t, d), outputs[j]):
            return False
    return True


def fit_table(
    inputs: list[np.ndarray],
    outputs: list[np.ndarray],
    feat: str,
    bg: int = 0,
    loo: bool = True,
    weak: bool = False,
):
    """The table (``((features...), colour)`` pairs, exceptions only) that maps every input to its output,
    and the default colour map for keys the table lacks (``((own, colour), ...)``, empty: keep the own
    colour), as ``(table, default)``; None if inconsistent, if nothing changes, or if no variant passes
    leave-one-out. With ``weak``, returns ``(table, default, passed_loo)`` and keeps a failing table."""
    if any(a.shape != b.shape for a, b in zip(inputs, outputs, strict=True)):
        return None
    if all(np.array_equal(a, b) for a, b in zip(inputs, outputs, strict=True)):
        return None
    kr = [keys(g, feat, bg) for g in inputs]
    ks = [k for k, _ in kr]
    radix = kr[0][1]
    table = _fit_arrays(ks, outputs)
    if table is None:
        return None
    own_of = {k: decode(k, radix)[0] for k in table} if feat not in NO_OWN else None
    variants = [False] if feat in NO_OWN else [False, True]
    first = None
    for use_default in variants:
        if use_default:
            lut = _defaults(inputs, outputs)
            default = tuple((int(c), int(lut[c])) for c in range(16) if lut[c] != c)
            if not default:
                continue
        else:
            lut, default = np.arange(16), ()
        if own_of is None:
            entries = table
        else:
            entries = {k: v for k, v in table.items() if v != lut[own_of[k]]}
        out = (tuple(sorted((decode(k, radix), v) for k, v in entries.items())), default)
        if first is None:
            first = out
        if not loo or len(inputs) < 2 or _loo_ok(ks, inputs, outputs, use_default):
            return (*out, True) if weak else out
    return (*first, False) if weak else None


def apply_table(g: np.ndarray, feat: str, table, bg: int = 0, default=()) -> np.ndarray:
    k, radix = keys(g, feat, bg)
    lut = None
    if default:
        lut = np.arange(16, dtype=np.int64)
        for a, b in default:
            lut[a] = b
    return _predict(k, g, {encode(parts, radix): v for parts, v in table}, lut)

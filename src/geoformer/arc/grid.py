"""Grid helpers for the ARC program search: the D4 group, backgrounds, connected objects, hashing.

Grids are 2-D ``uint8`` arrays with colours 0..9 (the search converts the loader's int64 grids once).
Nothing here mutates its inputs.

D4 elements are the integers 0..7 (``ELEMENT_NAMES``): ``apply_d4(e, g)`` is ``rot90(g', e % 4)`` where
``g'`` is ``g`` for ``e < 4`` and its transpose for ``e >= 4``. ``COMPOSE[a][b]`` is the element that
acts like "first ``a``, then ``b``"; it is computed by brute force on a grid whose 8 images are distinct,
so it is right by construction, and the tests check it is a group homomorphism.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import ndimage

DT = np.uint8
MAX_SIDE = 30
N_COLOURS = 10


def as_grid(a) -> np.ndarray:
    g = np.ascontiguousarray(np.asarray(a), dtype=DT)
    if g.ndim != 2:
        raise ValueError(f"an ARC grid is 2-D, got shape {g.shape}")
    return g


def valid(g: np.ndarray | None) -> bool:
    return g is not None and g.ndim == 2 and 0 < g.shape[0] <= MAX_SIDE and 0 < g.shape[1] <= MAX_SIDE


def grid_key(g: np.ndarray) -> bytes:
    """Bytes that identify a grid (its shape and its cells)."""
    return bytes((g.shape[0], g.shape[1])) + np.ascontiguousarray(g).tobytes()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def most_common(grids) -> int:
    """The most common colour over all cells of ``grids`` (ties: the smallest colour, so 0 wins ties)."""
    counts = np.zeros(N_COLOURS, dtype=np.int64)
    for g in grids:
        counts += np.bincount(g.ravel(), minlength=N_COLOURS)[:N_COLOURS]
    return int(np.argmax(counts))


def colours(g: np.ndarray) -> set[int]:
    return {int(c) for c in np.flatnonzero(np.bincount(g.ravel(), minlength=N_COLOURS))}


# ----------------------------------------------------------------------------- D4


def _raw_d4(e: int, g: np.ndarray) -> np.ndarray:
    return np.rot90(g.T if e >= 4 else g, e % 4)


_PROBE = np.arange(6).reshape(2, 3)
_IMAGES = [_raw_d4(e, _PROBE) for e in range(8)]


def _which(img: np.ndarray) -> int:
    for e, ref in enumerate(_IMAGES):
        if ref.shape == img.shape and np.array_equal(ref, img):
            return e
    raise AssertionError("not a D4 image")  # pragma: no cover


COMPOSE: tuple[tuple[int, ...], ...] = tuple(
    tuple(_which(_raw_d4(b, _raw_d4(a, _PROBE))) for b in range(8)) for a in range(8)
)
INVERSE: tuple[int, ...] = tuple(next(b for b in range(8) if COMPOSE[a][b] == 0) for a in range(8))
IDENTITY = 0


def _name_of(e: int) -> str:
    img = _IMAGES[e]
    refs = {
        "id": _PROBE,
        "rot90(k=1)": np.rot90(_PROBE, 1),
        "rot90(k=2)": np.rot90(_PROBE, 2),
        "rot90(k=3)": np.rot90(_PROBE, 3),
        "flip(axis=0)": _PROBE[::-1, :],
        "flip(axis=1)": _PROBE[:, ::-1],
        "transpose": _PROBE.T,
        "antitranspose": _PROBE[::-1, ::-1].T,
    }
    for name, ref in refs.items():
        if ref.shape == img.shape and np.array_equal(ref, img):
            return name
    raise AssertionError("unnamed D4 element")  # pragma: no cover


ELEMENT_NAMES: tuple[str, ...] = tuple(_name_of(e) for e in range(8))
ELEMENT_OF: dict[str, int] = {n: e for e, n in enumerate(ELEMENT_NAMES)}
_SHORT = {
    "id": "id",
    "rot90(k=1)": "r1",
    "rot90(k=2)": "r2",
    "rot90(k=3)": "r3",
    "flip(axis=0)": "fx0",
    "flip(axis=1)": "fx1",
    "transpose": "tr",
    "antitranspose": "atr",
}
OP_CODES: tuple[str, ...] = tuple(_SHORT[n] for n in ELEMENT_NAMES)  # short names (tile_fit layouts)
ELEMENT_OF_CODE: dict[str, int] = {c: e for e, c in enumerate(OP_CODES)}
SWAPS_AXES: tuple[bool, ...] = tuple(_IMAGES[e].shape != _PROBE.shape for e in range(8))


def apply_d4(e: int, g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_raw_d4(e, g)) if e else g


# ----------------------------------------------------------------------------- objects

S4 = ndimage.generate_binary_structure(2, 1)
S8 = np.ones((3, 3), dtype=bool)


class Obj:
    """A connected object: its bounding box, mask and cells (others set to the background) in the box."""

    __slots__ = ("r0", "c0", "r1", "c1", "mask", "sub", "size", "colours")

    def __init__(self, g: np.ndarray, sl: tuple[slice, slice], mask: np.ndarray, bg: int):
        self.r0, self.r1 = sl[0].start, sl[0].stop
        self.c0, self.c1 = sl[1].start, sl[1].stop
        self.mask = mask
        self.sub = np.where(mask, g[sl], DT(bg)).astype(DT)
        self.size = int(mask.sum())
        self.colours = frozenset(int(c) for c in np.unique(g[sl][mask]))

    @property
    def shape_key(self) -> bytes:
        return bytes(self.mask.shape) + self.mask.tobytes()

    @property
    def content_key(self) -> bytes:
        return grid_key(self.sub)

    @property
    def bbox_area(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)


_OBJ_CACHE: dict = {}


def objects(g: np.ndarray, conn: int = 8, multi: bool = False, bg: int = 0) -> list[Obj]:
    """Connected components of non-background cells, in reading order of their top-left corners.

    ``multi=False``: one colour per object; ``multi=True``: any non-background colours connect.
    ``conn`` is 4 or 8. Results are memoised per grid (the search asks many selectors of one grid).
    """
    key = (grid_key(g), conn, multi, bg)
    hit = _OBJ_CACHE.get(key)
    if hit is not None:
        return hit
    st = S8 if conn == 8 else S4
    out: list[Obj] = []
    if multi:
        lab, n = ndimage.label(g != bg, structure=st)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is not None:
                out.append(Obj(g, sl, lab[sl] == i, bg))
    else:
        for c in sorted(colours(g) - {bg}):
            lab, n = ndimage.label(g == c, structure=st)
            for i, sl in enumerate(ndimage.find_objects(lab), start=1):
                if sl is not None:
                    out.append(Obj(g, sl, lab[sl] == i, bg))
    out.sort(key=lambda o: (o.r0, o.c0, o.r1, o.c1))
    if len(_OBJ_CACHE) > 20_000:
        _OBJ_CACHE.clear()
    _OBJ_CACHE[key] = out
    return out


def unique_by(items, keyf):
    """The one item whose key occurs once among ``items`` when exactly one does, else None."""
    keys = [keyf(o) for o in items]
    counts = Counter(keys)
    ones = [o for o, k in zip(items, keys, strict=True) if counts[k] == 1]
    return ones[0] if len(ones) == 1 and len(items) > 1 else None


def extreme_by(items, keyf, largest: bool, same_content=None):
    """The item with the largest (or smallest) key; on a tie, the first one if every tied item has the
    same ``same_content`` key (so the choice does not matter), else None."""
    if not items:
        return None
    keys = [keyf(o) for o in items]
    best = max(keys) if largest else min(keys)
    tied = [o for o, k in zip(items, keys, strict=True) if k == best]
    if len(tied) == 1:
        return tied[0]
    if same_content is not None and len({same_content(o) for o in tied}) == 1:
        return tied[0]
    return None

"""The DSL: typed primitives, programs as pipelines of steps, their text form, running and canonical form.

A program is a tuple of :class:`Step` s applied left to right to the input grid ``x``; its text is
``x |> step |> step ...`` where a step prints as ``name(param=value, ...)`` with parameters at their
default left out (``crop_bbox``, ``rot90(k=1)``, ``crop_object(by=smallest, conn=4)``). Every
primitive maps a grid to a grid (or to None where it does not apply); parameters are typed:

=========== ========================================================= ==========================
kind         values                                                    searched over
=========== ========================================================= ==========================
int, enum    a small integer, a bare word                              ``choices``
colour       a colour present in the current grids (a selection;       the state's colours
             ``-1`` = any, where the default is -1)
paint        a colour the primitive writes                             output colours + 1 spare
paint1       a colour the primitive writes (a colour map may follow)   the commonest output colour
paint_same   ``same`` (the source's colour) or a paint colour          both
mask         the colour of cells to fill                               bg + colours in every grid
bg           the background colour                                     the task's commonest colour
step         a nested step (the per-object transform)                  the 7 non-identity D4 steps
cmap         ``{a:b, ...}`` colour map                                 fitted
ops          ``[id,fx1,...]`` D4 element codes or ``blank`` per tile   fitted
table        ``{(features...):colour, ...}`` local-rule exceptions     fitted
=========== ========================================================= ==========================

Colour parameters obey value precedence in the search (see :mod:`geoformer.arc.search`).
``parse(text)`` reads the text form back (``parse(show(p)) == p``). ``canonical(p)`` merges runs of
D4 steps into one element (and drops identities). ``cost(p)`` is the description length that ranks
programs: one per primitive (1.5 for a local rule, +3 if it failed leave-one-out) plus small
parameter costs (0.02 per enum index, 0.1 per non-default colour, 0.2 per colour-map entry or
non-identity tile, 0.1 per table entry, 0.1 per feature-set rank).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations, product
from typing import Any

import numpy as np

from geoformer.arc import prims as P
from geoformer.arc.grid import COMPOSE, ELEMENT_NAMES, ELEMENT_OF, IDENTITY, apply_d4, as_grid, objects, valid
from geoformer.arc.rules import FEATURE_COST, FEATURES, apply_table


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: str
    choices: tuple = ()
    default: Any = None


@dataclass(frozen=True)
class Prim:
    """A primitive. ``same_shape``: the output always has the input's shape. ``d4``: how it commutes with
    the D4 group -- ``equivariant`` (f(g x) = g f(x) for every element g), ``covariant`` (f_p(g x) =
    g f_p'(x) for some searched parameter p'), ``element`` (it *is* a D4 element) or ``none``.
    ``fitted``: its parameters are fitted to the demonstrations, never enumerated."""

    name: str
    fn: Callable
    params: tuple[ParamSpec, ...] = ()
    same_shape: bool = False
    d4: str = "none"
    fitted: bool = False
    cost: float = 1.0
    constraint: Callable | None = None
    doc: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def kw(self) -> dict[str, Any]:
        return dict(self.args)


REGISTRY: dict[str, Prim] = {}


def _reg(p: Prim) -> None:
    assert p.name not in REGISTRY, p.name
    REGISTRY[p.name] = p


def step(name: str, **kw) -> Step:
    """A step with every parameter of ``name`` filled (given ones, else defaults), in declared order."""
    prim = REGISTRY[name]
    unknown = set(kw) - {s.name for s in prim.params}
    if unknown:
        raise ValueError(f"{name} has no parameter {sorted(unknown)[0]!r}")
    return Step(name, tuple((s.name, kw.get(s.name, s.default)) for s in prim.params))


# ----------------------------------------------------------------------------- the primitives

BG = ParamSpec("bg", "bg", default=0)
CONN = ParamSpec("conn", "int", (8, 4), 8)


def _d4_fn(e):
    return lambda g, **_: apply_d4(e, g)


def _rot_fn(g, k=1):
    return apply_d4(ELEMENT_OF[f"rot90(k={k})"], g)


def _flip_fn(g, axis=0):
    return apply_d4(ELEMENT_OF[f"flip(axis={axis})"], g)


_reg(Prim("rot90", _rot_fn, (ParamSpec("k", "int", (1, 2, 3)),), d4="element", doc="rotate k quarter turns"))
_reg(Prim("flip", _flip_fn, (ParamSpec("axis", "int", (0, 1)),), d4="element", doc="mirror rows / cols"))
_reg(Prim("transpose", _d4_fn(ELEMENT_OF["transpose"]), d4="element"))
_reg(Prim("antitranspose", _d4_fn(ELEMENT_OF["antitranspose"]), d4="element"))


def d4_element(s: Step) -> int | None:
    """The D4 element a step is, or None."""
    if REGISTRY[s.name].d4 != "element":
        return None
    if s.name in ("transpose", "antitranspose"):
        return ELEMENT_OF[s.name]
    return ELEMENT_OF[f"{s.name}({s.args[0][0]}={s.args[0][1]})"]


def element_step(e: int) -> Step | None:
    name = ELEMENT_NAMES[e]
    if name == "id":
        return None
    m = re.fullmatch(r"(\w+)\((\w+)=(\d+)\)", name)
    return step(m.group(1), **{m.group(2): int(m.group(3))}) if m else step(name)


def _multi_ok(kw):
    if kw["by"] == "most_colours":
        return kw["multi"] == 1
    return True


_OBJ = (
    ParamSpec("by", "enum", P.SELECTORS, "largest"),
    CONN,
    ParamSpec("multi", "int", (0, 1), 0),
)
_reg(Prim("crop_bbox", P.crop_bbox, (BG,), d4="equivariant", doc="box of the non-background cells"))
_reg(Prim("trim", P.trim, d4="equivariant", doc="drop the outer ring"))
_reg(Prim("half", P.half, (ParamSpec("part", "enum", P.HALVES, "top"),), d4="covariant"))
_reg(
    Prim(
        "majority_colour",
        P.majority_colour,
        (ParamSpec("how", "enum", ("most", "least"), "most"), BG),
        d4="equivariant",
    )
)
_reg(Prim("crop_colour", P.crop_colour, (ParamSpec("c", "colour", default=1), BG), d4="equivariant"))
_reg(
    Prim(
        "crop_object",
        P.crop_object,
        (*_OBJ, ParamSpec("keep", "enum", ("obj", "window"), "obj"), BG),
        d4="covariant",
        constraint=_multi_ok,
        doc="box of one selected object",
    )
)
_reg(Prim("select_object", P.select_object, (*_OBJ, BG), True, "covariant", constraint=_multi_ok))
_reg(Prim("drop_object", P.drop_object, (*_OBJ, BG), True, "covariant", constraint=_multi_ok))
_reg(Prim("crop_marked", P.crop_marked, (ParamSpec("c", "colour", default=1), CONN, BG), d4="equivariant"))
_reg(
    Prim(
        "recolour_objects",
        P.recolour_objects,
        (ParamSpec("how", "enum", ("minority", "majority"), "minority"), CONN, BG),
        True,
        "equivariant",
    )
)
_reg(Prim("drop_small", P.drop_small, (ParamSpec("k", "int", (1, 2), 1), CONN, BG), True, "equivariant"))
_reg(Prim("keep_colour", P.keep_colour, (ParamSpec("c", "colour", default=1), BG), True, "equivariant"))
_reg(Prim("erase", P.erase, (ParamSpec("c", "colour", default=1), BG), True, "equivariant"))

_SCALES = {(2, 2), (3, 3), (4, 4), (5, 5), (1, 2), (2, 1), (1, 3), (3, 1)}
_F = (1, 2, 3, 4, 5)
_reg(
    Prim(
        "upscale",
        P.upscale,
        (ParamSpec("fy", "int", _F, 2), ParamSpec("fx", "int", _F, 2)),
        d4="covariant",
        constraint=lambda kw: (kw["fy"], kw["fx"]) in _SCALES,
    )
)
_reg(
    Prim(
        "downscale",
        P.downscale,
        (ParamSpec("fy", "int", _F, 2), ParamSpec("fx", "int", _F, 2)),
        d4="covariant",
        constraint=lambda kw: (kw["fy"], kw["fx"]) in _SCALES,
    )
)
_reg(Prim("upscale_ncolours", P.upscale_ncolours, (BG,), d4="equivariant"))
_reg(Prim("swap2", P.swap2, (BG,), True, "equivariant", doc="swap the two colours"))
_reg(
    Prim(
        "shift",
        P.shift,
        (ParamSpec("dir", "enum", ("down", "up", "left", "right"), "down"), BG),
        True,
        "covariant",
    )
)
_reg(Prim("kron_colour", P.kron_colour, (ParamSpec("c", "colour", default=1), BG), d4="equivariant"))
_reg(Prim("as_row", P.as_row, (BG,), doc="non-background cells as one row"))
_reg(Prim("colour_list", P.colour_list, (ParamSpec("order", "enum", ("desc", "asc"), "desc"), BG)))
_reg(
    Prim(
        "line_majority",
        P.line_majority,
        (ParamSpec("axis", "enum", ("rows", "cols"), "rows"),),
        True,
        "covariant",
    )
)
_reg(Prim("downscale_auto", P.downscale_auto, d4="equivariant", doc="undo pixel upscaling"))
_TILES = {(1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (3, 3), (1, 4), (4, 1), (4, 4)}
_reg(
    Prim(
        "tile",
        P.tile,
        (
            ParamSpec("ny", "int", (1, 2, 3, 4), 2),
            ParamSpec("nx", "int", (1, 2, 3, 4), 2),
            ParamSpec("mode", "enum", ("plain", "mirror", "mirror_rev"), "plain"),
        ),
        constraint=lambda kw: (kw["ny"], kw["nx"]) in _TILES,
    )
)
_reg(
    Prim(
        "self_kron",
        P.self_kron,
        (ParamSpec("mode", "enum", ("nonbg", "bg", "major"), "nonbg"), BG),
        d4="equivariant",
    )
)
_reg(
    Prim(
        "mirror_concat",
        P.mirror_concat,
        (ParamSpec("side", "enum", ("right", "left", "down", "up"), "right"),),
    )
)
_reg(
    Prim(
        "gravity",
        P.gravity,
        (ParamSpec("dir", "enum", ("down", "up", "left", "right"), "down"), BG),
        True,
        "covariant",
    )
)
_reg(
    Prim(
        "sort_lines",
        P.sort_lines,
        (
            ParamSpec("axis", "enum", ("rows", "cols"), "rows"),
            ParamSpec("order", "enum", ("asc", "desc"), "asc"),
            BG,
        ),
        True,
        "covariant",
        doc="rows or columns ordered by their count of non-background cells",
    )
)
_reg(
    Prim(
        "slide",
        P.slide,
        (ParamSpec("c", "colour", default=1), ParamSpec("dir", "enum", P.SLIDES, "toward"), BG),
        True,
        "covariant",
        doc="cells of one colour move rigidly until they touch",
    )
)
_reg(
    Prim(
        "extend",
        P.extend,
        (ParamSpec("dir", "enum", tuple(P.DIR_GROUPS), "hv"), ParamSpec("only", "colour", default=-1), BG),
        True,
        doc="rays from cells over the background",
    )
)
_reg(
    Prim(
        "connect",
        P.connect,
        (
            ParamSpec("axis", "enum", ("hv", "h", "v", "vh", "diag", "all"), "hv"),
            ParamSpec("c", "paint_same", default="same"),
            BG,
        ),
        True,
    )
)
_reg(
    Prim(
        "lines",
        P.lines,
        (ParamSpec("axis", "enum", ("h", "v", "hv"), "h"), ParamSpec("only", "colour", default=-1), BG),
        True,
        doc="full lines through cells, drawn over everything",
    )
)
_reg(Prim("fill_enclosed", P.fill_enclosed, (ParamSpec("c", "paint", default=1), BG), True, "equivariant"))
_reg(Prim("outline", P.outline, (ParamSpec("c", "paint", default=1), CONN, BG), True, "equivariant"))
_reg(Prim("fill_bbox", P.fill_bbox, (ParamSpec("c", "paint", default=1), CONN, BG), True, "equivariant"))
_reg(Prim("hollow", P.hollow, (BG,), True, "equivariant"))
_reg(Prim("draw_border", P.draw_border, (ParamSpec("c", "paint", default=1),), True, "equivariant"))
_reg(
    Prim(
        "compress", P.compress, (ParamSpec("axis", "enum", ("both", "rows", "cols"), "both"),), d4="covariant"
    )
)
_reg(
    Prim(
        "drop_empty",
        P.drop_empty,
        (ParamSpec("axis", "enum", ("both", "rows", "cols"), "both"), BG),
        d4="covariant",
    )
)
_reg(
    Prim(
        "sym_complete",
        P.sym_complete,
        (ParamSpec("sym", "enum", P.SYMS, "lr"), ParamSpec("mask", "mask", default=0)),
        True,
    )
)
_reg(Prim("period_complete", P.period_complete, (ParamSpec("mask", "mask", default=0),), True))
_reg(
    Prim(
        "split_summary",
        P.split_summary,
        (
            ParamSpec("split", "enum", ("sep",), "sep"),
            ParamSpec("how", "enum", ("majority", "nonbg"), "majority"),
            BG,
        ),
    )
)
_reg(
    Prim(
        "sym_patch",
        P.sym_patch,
        (ParamSpec("sym", "enum", P.SYMS, "lr"), ParamSpec("mask", "mask", default=0)),
    )
)
_reg(
    Prim(
        "split_broadcast",
        P.split_broadcast,
        (ParamSpec("how", "enum", P.BROADCASTS, "overlay"), BG),
        True,
        "equivariant",
        doc="every piece between separators becomes one piece made from all of them",
    )
)
_SPLITS2 = ("half1", "half0", "sep")
_QUAD_ORDERS = tuple(
    "p" + "".join(map(str, p)) for p in permutations(range(4)) if p not in ((0, 1, 2, 3), (3, 2, 1, 0))
)
_reg(
    Prim(
        "split_logic",
        P.split_logic,
        (
            ParamSpec("split", "enum", _SPLITS2, "half1"),
            ParamSpec("op", "enum", P.LOGIC_OPS, "and"),
            ParamSpec("c", "paint1", default=1),
            BG,
        ),
    )
)
_reg(
    Prim(
        "split_overlay",
        P.split_overlay,
        (
            ParamSpec(
                "split", "enum", ("half1", "half0", "sep", "sepbg", "quad", "third1", "third0"), "half1"
            ),
            ParamSpec("order", "enum", ("fwd", "rev", *_QUAD_ORDERS), "fwd"),
            BG,
        ),
        constraint=lambda kw: kw["split"] == "quad" or not kw["order"].startswith("p"),
    )
)
_reg(
    Prim(
        "split_pick",
        P.split_pick,
        (
            ParamSpec("split", "enum", ("sep", "sepbg", "half1", "half0", "quad", "third1", "third0"), "sep"),
            ParamSpec("by", "enum", P.PICKS, "unique"),
            BG,
        ),
    )
)


def per_object(g, f=None, conn=8, multi=1, bg=0):
    """Apply the DSL step ``f`` to each object's box and paste the result back in place (a combinator over
    steps, so it lives with the DSL rather than with the grid primitives)."""
    objs = objects(g, conn, bool(multi), bg)
    if not objs:
        return None
    out = g.copy()
    for o in objs:
        out[o.r0 : o.r1, o.c0 : o.c1][o.mask] = bg
    for o in objs:
        t = run_step(f, o.sub)
        if t is None or t.shape != o.sub.shape:
            return None
        win = out[o.r0 : o.r1, o.c0 : o.c1]
        m = t != bg
        win[m] = t[m]
    return out


_NESTED = tuple(element_step(e) for e in range(1, 8))
_reg(
    Prim(
        "per_object",
        per_object,
        (
            ParamSpec("f", "step", _NESTED),
            CONN,
            ParamSpec("multi", "int", (1, 0), 1),
            BG,
        ),
        True,
        doc="apply f to every object's box and paste back",
    )
)

# fitted primitives (parameters come from the demonstrations)
_reg(Prim("recolor", P.recolor, (ParamSpec("map", "cmap", default=()),), True, "equivariant", fitted=True))
_reg(
    Prim(
        "tile_fit",
        P.tile_fit,
        (
            ParamSpec("rows", "int", (), 2),
            ParamSpec("cols", "int", (), 2),
            ParamSpec("ops", "ops", default=()),
            BG,
        ),
        fitted=True,
    )
)


_reg(
    Prim(
        "crop_fixed",
        P.crop_fixed,
        (
            ParamSpec("anchor", "enum", ("tl", "tr", "bl", "br"), "tl"),
            ParamSpec("dr", "int", (), 0),
            ParamSpec("dc", "int", (), 0),
            ParamSpec("h", "int", (), 1),
            ParamSpec("w", "int", (), 1),
        ),
        fitted=True,
    )
)
_reg(
    Prim(
        "period_extend",
        P.period_extend,
        (ParamSpec("h", "int", (), 1), ParamSpec("w", "int", (), 1)),
        fitted=True,
    )
)


def _local_rule(g, feat="n4", table=(), default=(), bg=0, loo=1):
    return apply_table(g, feat, table, bg, default)


_reg(
    Prim(
        "local_rule",
        _local_rule,
        (
            ParamSpec("feat", "enum", FEATURES, "n4"),
            ParamSpec("table", "table", default=()),
            ParamSpec("default", "cmap", default=()),
            BG,
            ParamSpec("loo", "int", (1, 0), 1),
        ),
        True,
        fitted=True,
        cost=1.5,
    )
)


# ----------------------------------------------------------------------------- running


def run_step(s: Step, g: np.ndarray) -> np.ndarray | None:
    try:
        out = REGISTRY[s.name].fn(g, **s.kw())
    except (ValueError, IndexError):
        return None
    return out if valid(out) else None


def run(program, g: np.ndarray) -> np.ndarray | None:
    """The grid a program makes from ``g`` (any integer array; the result is uint8), or None."""
    g = as_grid(g)
    for s in program:
        g = run_step(s, g)
        if g is None:
            return None
    return g


# ----------------------------------------------------------------------------- cost


WEAK_COST = 3.0  # extra description length of a local rule that fails leave-one-out


def is_weak(program) -> bool:
    """Whether a program ends in a local rule that failed leave-one-out (a guess, not an explanation)."""
    return bool(program) and program[-1].name == "local_rule" and not program[-1].kw()["loo"]


def param_cost(spec: ParamSpec, value) -> float:
    if spec.kind in ("int", "enum", "step"):
        if spec.kind == "step":
            return 0.2
        if value == spec.default:
            return 0.0
        return 0.02 * (spec.choices.index(value) + 1) if value in spec.choices else 0.05
    if spec.kind in ("colour", "paint", "paint1", "paint_same", "mask"):
        return 0.0 if value == spec.default else 0.1
    if spec.kind == "cmap":
        return 0.2 * sum(1 for a, b in value if a != b)
    if spec.kind == "ops":
        return 0.2 * sum(1 for o in value if o != "id")
    if spec.kind == "table":
        return 0.1 * len(value)
    return 0.0


def step_cost(s: Step) -> float:
    prim = REGISTRY[s.name]
    c = prim.cost + sum(param_cost(spec, v) for spec, (_, v) in zip(prim.params, s.args, strict=True))
    if s.name == "local_rule":
        c += FEATURE_COST[s.kw()["feat"]] + (0.0 if s.kw()["loo"] else WEAK_COST)
    return c


def cost(program) -> float:
    return sum(step_cost(s) for s in program)


# ----------------------------------------------------------------------------- canonical form


def canonical(program) -> tuple[Step, ...]:
    """Runs of consecutive D4 steps become one step (or none, if they compose to the identity)."""
    out: list[Step] = []
    run_e: int | None = None
    for s in program:
        e = d4_element(s)
        if e is not None:
            run_e = e if run_e is None else COMPOSE[run_e][e]
            continue
        if run_e is not None and run_e != IDENTITY:
            out.append(element_step(run_e))
        run_e = None
        out.append(s)
    if run_e is not None and run_e != IDENTITY:
        out.append(element_step(run_e))
    return tuple(out)


# ----------------------------------------------------------------------------- text


def _show_value(spec: ParamSpec, v) -> str:
    if spec.kind == "step":
        return show_step(v)
    if spec.kind == "cmap":
        return "{" + ",".join(f"{a}:{b}" for a, b in v) + "}"
    if spec.kind == "ops":
        return "[" + ",".join(v) + "]"
    if spec.kind == "table":
        return "{" + ",".join("(" + ",".join(map(str, k)) + f"):{c}" for k, c in v) + "}"
    return str(v)


def show_step(s: Step) -> str:
    prim = REGISTRY[s.name]
    parts = [
        f"{name}={_show_value(spec, v)}"
        for spec, (name, v) in zip(prim.params, s.args, strict=True)
        if v != spec.default
    ]
    return f"{s.name}({', '.join(parts)})" if parts else s.name


def show(program) -> str:
    """``x |> step |> ...`` (``x`` alone for the empty program)."""
    return " |> ".join(["x", *(show_step(s) for s in program)])


_TOKEN = re.compile(r"\s*(\|>|-?\d+|[A-Za-z_][A-Za-z_0-9]*|[(){}\[\],:=])")


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse program text at {text[pos : pos + 20]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.t = _tokens(text)
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"program text: expected {want or 'more'}, got {tok!r}")
        self.i += 1
        return tok

    def value(self):
        tok = self.peek()
        if tok == "{":
            self.take("{")
            items = []
            while self.peek() != "}":
                k = self.value()
                self.take(":")
                items.append((k, self.value()))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
            return ("dict", items)
        if tok in ("[", "("):
            close = "]" if tok == "[" else ")"
            self.take(tok)
            items = []
            while self.peek() != close:
                items.append(self.value())
                if self.peek() == ",":
                    self.take(",")
            self.take(close)
            return tuple(items)
        tok = self.take()
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok in REGISTRY and self.peek() == "(":
            return self.step_after(tok)
        return tok

    def step_after(self, name: str) -> Step:
        kw = {}
        if self.peek() == "(":
            self.take("(")
            while self.peek() != ")":
                k = self.take()
                self.take("=")
                kw[k] = self.value()
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
        return _typed_step(name, kw)

    def step(self) -> Step:
        name = self.take()
        if name not in REGISTRY:
            raise ValueError(f"unknown primitive {name!r}")
        return self.step_after(name)


def _typed_step(name: str, kw: dict) -> Step:
    prim = REGISTRY.get(name)
    if prim is None:
        raise ValueError(f"unknown primitive {name!r}")
    specs = {s.name: s for s in prim.params}
    typed = {}
    for k, v in kw.items():
        if k not in specs:
            raise ValueError(f"{name} has no parameter {k!r}")
        kind = specs[k].kind
        if kind == "step" and isinstance(v, str):
            v = _typed_step(v, {})
        elif kind in ("cmap", "table"):
            if not (isinstance(v, tuple) and len(v) == 2 and v[0] == "dict"):
                raise ValueError(f"{name}.{k} must be a {{...}} map")
            v = tuple(sorted((tuple(a) if isinstance(a, tuple) else a, b) for a, b in v[1]))
        elif kind == "ops":
            v = tuple(v)
        typed[k] = v
    return step(name, **typed)


def parse(text: str) -> tuple[Step, ...]:
    """The program of a text written by :func:`show`."""
    p = _Parser(text)
    p.take("x")
    steps = []
    while p.peek() is not None:
        p.take("|>")
        steps.append(p.step())
    return tuple(steps)


# ----------------------------------------------------------------------------- enumeration


def instances(prim: Prim, ctx) -> list[Step]:
    """Every searched parameter setting of a primitive, given a context with ``bg``, ``colours``
    (selectable colours), ``masks`` and ``paints`` (colours to write)."""
    lists = []
    for spec in prim.params:
        if spec.kind in ("int", "enum", "step"):
            lists.append(spec.choices)
        elif spec.kind == "bg":
            lists.append((ctx.bg,))
        elif spec.kind == "colour":
            vals = tuple(ctx.colours)
            lists.append(((-1,) + vals) if spec.default == -1 else vals)
        elif spec.kind == "mask":
            lists.append(tuple(ctx.masks))
        elif spec.kind == "paint":
            lists.append(tuple(ctx.paints))
        elif spec.kind == "paint1":
            lists.append(tuple(ctx.paints[:1]) or (1,))
        elif spec.kind == "paint_same":
            lists.append(("same", *ctx.paints))
        else:
            raise ValueError(f"{prim.name}: parameter kind {spec.kind} is not searched")
    names = [s.name for s in prim.params]
    out = []
    for combo in product(*lists):
        kw = dict(zip(names, combo, strict=True))
        if prim.constraint is not None and not prim.constraint(kw):
            continue
        out.append(Step(prim.name, tuple(kw.items())))
    return out


SEARCHED = tuple(name for name, p in REGISTRY.items() if not p.fitted)

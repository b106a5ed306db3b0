"""The ARC program search: DSL primitives on hand-built grids, the D4 group and canonical forms, program
text, fitters and the search itself on synthetic tasks (no ARC data is read)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from geoformer.arc import dsl, fit, rules
from geoformer.arc import grid as G
from geoformer.arc import prims as P
from geoformer.arc import search as S
from geoformer.arc.dsl import parse, show, step


def A(rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def rand_grid(rng, h=7, w=9, p=0.35, k=4) -> np.ndarray:
    g = rng.integers(1, k + 1, size=(h, w)).astype(np.uint8)
    g[rng.random((h, w)) > p] = 0
    return g


# ----------------------------------------------------------------------------- primitives


def test_gravity_all_directions():
    g = A([[1, 0, 2], [0, 0, 0], [0, 3, 0]])
    assert (P.gravity(g, "down") == A([[0, 0, 0], [0, 0, 0], [1, 3, 2]])).all()
    assert (P.gravity(g, "up") == A([[1, 3, 2], [0, 0, 0], [0, 0, 0]])).all()
    assert (P.gravity(g, "left") == A([[1, 2, 0], [0, 0, 0], [3, 0, 0]])).all()
    assert (P.gravity(g, "right") == A([[0, 1, 2], [0, 0, 0], [0, 0, 3]])).all()
    tall = A([[4], [0], [5], [0]])  # order within a column is kept
    assert (P.gravity(tall, "down") == A([[0], [0], [4], [5]])).all()


def test_fill_enclosed_and_outline_and_hollow():
    g = A([[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1]])
    f = P.fill_enclosed(g, c=4)
    assert f[2, 2] == 4 and (f != g).sum() == 1
    assert P.fill_enclosed(A([[0, 1], [1, 0]]), c=4) is None  # nothing enclosed
    o = P.outline(A([[0, 0, 0], [0, 2, 0], [0, 0, 0]]), c=3, conn=4)
    assert (o == A([[0, 3, 0], [3, 2, 3], [0, 3, 0]])).all()
    h = P.hollow(A([[5, 5, 5], [5, 5, 5], [5, 5, 5]]))
    assert (h == A([[5, 5, 5], [5, 0, 5], [5, 5, 5]])).all()


def test_tilings_plain_mirrored_and_self_kron():
    g = A([[1, 2], [3, 0]])
    assert (P.tile(g, 1, 2, "plain") == A([[1, 2, 1, 2], [3, 0, 3, 0]])).all()
    m = P.tile(g, 2, 2, "mirror")
    assert (m == A([[1, 2, 2, 1], [3, 0, 0, 3], [3, 0, 0, 3], [1, 2, 2, 1]])).all()
    assert (m == m[::-1]).all() and (m == m[:, ::-1]).all()
    r = P.tile(g, 1, 2, "mirror_rev")
    assert (r == A([[2, 1, 1, 2], [0, 3, 3, 0]])).all()
    assert (P.mirror_concat(g, "down") == A([[1, 2], [3, 0], [3, 0], [1, 2]])).all()
    k = P.self_kron(A([[1, 0], [0, 1]]))
    assert (k == A([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])).all()


def test_scaling():
    g = A([[1, 2], [3, 4]])
    up = P.upscale(g, 3, 3)
    assert up.shape == (6, 6) and (up[:3, :3] == 1).all() and (up[3:, 3:] == 4).all()
    assert (P.downscale(up, 3, 3) == g).all()
    assert (P.downscale_auto(up) == g).all()
    assert P.downscale_auto(g) is None
    assert P.downscale(A([[1, 2, 3]]), 2, 2) is None


def test_symmetry_completion_with_offset_axis_and_d4():
    full = A([[0, 1, 2, 3, 2, 1], [0, 4, 5, 6, 5, 4], [0, 7, 8, 1, 8, 7]])  # mirror axis at column 3
    holed = full.copy()
    holed[1, 5] = 0
    holed[2, 4] = 0
    assert (P.sym_complete(holed, "lr", 0) == full).all()
    marked = full.copy()
    marked[1, 5] = marked[2, 4] = 9  # the cells to fill are marked with 9: the patch is their box
    assert (P.sym_patch(marked, "lr", 9) == A([[5, 4], [8, 7]])).all()
    sq = A([[1, 2, 2, 1], [2, 3, 3, 2], [2, 3, 3, 2], [1, 2, 2, 1]])
    damaged = sq.copy()
    damaged[0, 1] = damaged[3, 3] = damaged[2, 1] = 9
    assert (P.sym_complete(damaged, "d4", 9) == sq).all()
    assert P.sym_complete(A([[1, 2], [3, 4]]), "lr", 0) is None  # nothing to fill


def test_period_complete():
    g = A([[1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 0, 0], [3, 1, 2, 3, 0, 0]])
    assert (P.period_complete(g, 0) == A([[1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 3, 1], [3, 1, 2, 3, 1, 2]])).all()


def test_period_complete_diagonal_stripes():
    g = A([[2, 8, 3, 0], [8, 3, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0]])  # colour = (i + j) mod 3
    ii, jj = np.indices((4, 4))
    assert (P.period_complete(g, 0) == A([2, 8, 3])[(ii + jj) % 3]).all()


def test_small_shape_and_colour_primitives():
    g = A([[0, 3, 0], [3, 3, 0], [0, 0, 5]])
    assert (P.as_row(g) == A([[3, 3, 3, 5]])).all()
    assert (P.colour_list(g) == A([[3], [5]])).all() and (P.colour_list(g, "asc") == A([[5], [3]])).all()
    assert (P.shift(g, "right") == A([[0, 0, 3], [0, 3, 3], [0, 0, 0]])).all()
    assert (P.swap2(g) == A([[0, 5, 0], [5, 5, 0], [0, 0, 3]])).all()
    assert P.upscale_ncolours(g).shape == (6, 6)
    assert (P.line_majority(A([[1, 1, 2], [3, 4, 4]])) == A([[1, 1, 1], [4, 4, 4]])).all()
    assert (
        P.kron_colour(A([[2, 0], [0, 0]]), 2) == A([[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    ).all()
    obj = A([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 6, 0], [0, 0, 0, 4]])
    # with 4-connectivity the 4 in the corner is its own object; with 8 it touches the 6 diagonally
    assert (P.crop_marked(obj, 6, conn=4) == A([[1, 1], [1, 6]])).all()
    assert P.crop_marked(obj, 6, conn=8).shape == (3, 3)
    assert P.crop_marked(obj, 4, conn=4) is None  # the 4 alone is not a multicolour object
    assert (P.recolour_objects(obj, "minority", conn=4)[1:3, 1:3] == 6).all()
    assert (P.recolour_objects(obj, "majority", conn=8)[1:, 1:] == A([[1, 1, 0], [1, 1, 0], [0, 0, 1]])).all()
    assert (P.half(A([[1, 2], [3, 4]]), "br") == A([[4]])).all()
    assert (P.crop_fixed(A([[1, 2, 3], [4, 5, 6]]), "br", 0, 1, 1, 2) == A([[4, 5]])).all()
    assert (
        P.period_extend(A([[1, 2], [3, 4]]), 3, 5) == A([[1, 2, 1, 2, 1], [3, 4, 3, 4, 3], [1, 2, 1, 2, 1]])
    ).all()


def test_half_split_logic_and_overlay():
    left = A([[1, 1, 0], [0, 1, 0]])
    right = A([[2, 0, 0], [2, 2, 0]])
    sep = np.concatenate([left, A([[5], [5]]), right], axis=1)  # a full column of 5 separates the halves
    even = np.concatenate([left, right], axis=1)
    expect = {
        "and": A([[1, 0, 0], [0, 1, 0]]),
        "or": A([[1, 1, 0], [1, 1, 0]]),
        "xor": A([[0, 1, 0], [1, 0, 0]]),
        "minus": A([[0, 1, 0], [0, 0, 0]]),
        "rminus": A([[0, 0, 0], [1, 0, 0]]),
        "nor": A([[0, 0, 1], [0, 0, 1]]),
    }
    for op, e in expect.items():
        assert (P.split_logic(sep, "sep", op, 3) == 3 * e).all(), op
        assert (P.split_logic(sep, "half1", op, 3) == 3 * e).all(), op  # a 1-line middle separator is skipped
        assert (P.split_logic(even, "half1", op, 3) == 3 * e).all(), op
    assert (P.split_overlay(even, "half1", "fwd") == A([[2, 1, 0], [2, 2, 0]])).all()
    assert (P.split_overlay(even, "half1", "rev") == A([[1, 1, 0], [2, 1, 0]])).all()
    assert P.split_logic(A([[1, 2, 3], [1, 3, 3]]), "half1", "and", 1) is None  # odd, no middle separator


def test_split_pick_and_summary():
    a, b = A([[1, 1], [1, 0]]), A([[2, 2], [2, 2]])
    g = np.concatenate([a, A([[5], [5]]), a, A([[5], [5]]), b], axis=1)
    assert (P.split_pick(g, "sep", "unique") == b).all()
    assert (P.split_pick(g, "sep", "most_cells") == b).all()
    s = P.split_summary(g, "sep", "majority")
    assert (s == A([[1, 1, 2]])).all()


def test_split_broadcast_overlay_and_fullest():
    """Pieces between separators become one piece made from all of them; separators stay; pieces that
    disagree on a cell (overlay) or tie for most cells (fullest) do not apply."""
    sep = A([[5], [5]])
    a, b, e = A([[1, 0], [0, 0]]), A([[0, 0], [0, 1]]), A([[0, 0], [0, 0]])
    g = np.concatenate([a, sep, e, sep, b], axis=1)
    both = A([[1, 0], [0, 1]])
    assert (P.split_broadcast(g, "overlay") == np.concatenate([both, sep, both, sep, both], axis=1)).all()
    assert P.split_broadcast(g, "fullest") is None  # a and b tie
    full = np.concatenate([both, sep, e, sep, a], axis=1)
    assert (P.split_broadcast(full, "fullest") == np.concatenate([both, sep, both, sep, both], axis=1)).all()
    clash = np.concatenate([a, sep, A([[2, 0], [0, 0]])], axis=1)
    assert P.split_broadcast(clash, "overlay") is None
    assert P.split_broadcast(np.concatenate([a, sep, A([[1, 0, 0], [0, 0, 0]])], axis=1)) is None  # unequal
    assert P.split_broadcast(A([[1, 0], [0, 2]])) is None  # no separator


def test_slide_moves_one_colour_rigidly_until_contact():
    g = A([[2, 2, 0, 0, 0, 8], [0, 2, 0, 0, 0, 8], [0, 0, 0, 0, 0, 0]])
    want = A([[0, 0, 0, 2, 2, 8], [0, 0, 0, 0, 2, 8], [0, 0, 0, 0, 0, 0]])
    assert (P.slide(g, 2, "toward") == want).all() and (P.slide(g, 2, "right") == want).all()
    assert (P.slide(g, 2, "down") == A([[0, 0, 0, 0, 0, 8], [2, 2, 0, 0, 0, 8], [0, 2, 0, 0, 0, 0]])).all()
    assert P.slide(g, 2, "up") is None and P.slide(g, 2, "left") is None  # already at the border
    assert P.slide(g, 3) is None  # no such colour
    assert P.slide(A([[2, 0, 0], [0, 0, 8]]), 2, "toward") is None  # apart on both axes: no direction
    assert (P.slide(g, 8, "toward") == A([[2, 2, 8, 0, 0, 0], [0, 2, 8, 0, 0, 0], [0, 0, 0, 0, 0, 0]])).all()


def test_sort_lines_by_count_is_stable():
    g = A([[1, 1, 0], [0, 0, 0], [3, 0, 0], [0, 4, 0]])
    assert (P.sort_lines(g, "rows", "asc") == A([[0, 0, 0], [3, 0, 0], [0, 4, 0], [1, 1, 0]])).all()
    assert (P.sort_lines(g, "rows", "desc") == A([[1, 1, 0], [3, 0, 0], [0, 4, 0], [0, 0, 0]])).all()
    assert (P.sort_lines(g.T, "cols", "asc") == P.sort_lines(g, "rows", "asc").T).all()


def test_objects_and_selection():
    g = A(
        [
            [1, 1, 0, 0, 0, 2],
            [1, 1, 0, 3, 0, 0],
            [0, 0, 3, 0, 0, 0],
            [0, 0, 0, 0, 4, 4],
            [0, 0, 0, 0, 4, 4],
        ]
    )
    assert len(G.objects(g, conn=8)) == 4 and len(G.objects(g, conn=4)) == 5
    assert len(G.objects(A([[1, 2], [0, 0]]), conn=4, multi=True)) == 1
    assert (P.crop_object(g, "smallest", 8, 0, "obj") == A([[2]])).all()
    assert P.crop_object(g, "largest", 8, 0, "obj") is None  # two 4-cell squares that look different
    assert P.select_object(g, "top", 8, 0) is None  # the 1-square and the 2-pixel tie for the top row
    bottom = P.select_object(g, "bottom", 8, 0)
    assert set(np.unique(bottom)) == {0, 4} and (bottom == 4).sum() == 4
    h = A([[1, 0, 1, 0, 5, 5], [0, 0, 0, 0, 5, 0]])
    assert (P.crop_object(h, "unique_colour", 8, 0, "obj") == A([[5, 5], [5, 0]])).all()
    assert (P.crop_bbox(A([[0, 0, 0], [0, 7, 0], [0, 0, 8]])) == A([[7, 0], [0, 8]])).all()
    assert (P.trim(A([[1, 1, 1], [1, 6, 1], [1, 1, 1]])) == A([[6]])).all()


def test_line_extension_connect_and_lines():
    g = A([[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3]])
    e = P.extend(g, "down")
    assert (e[:, 1] == A([0, 2, 2, 2])).all() and e[3, 3] == 3
    stop = P.extend(A([[1], [0], [2], [0]]), "down")
    assert (stop[:, 0] == A([1, 1, 2, 2])).all()  # a ray stops at the next cell
    c = P.connect(A([[4, 0, 0, 4], [0, 0, 0, 0], [4, 0, 0, 5]]), "h", "same")
    assert (c[0] == 4).all() and (c[2] == A([4, 0, 0, 5])).all()
    d = P.connect(A([[1, 0, 0], [0, 0, 0], [0, 0, 1]]), "diag", 6)
    assert d[1, 1] == 6
    ln = P.lines(A([[0, 0, 0], [0, 8, 0], [0, 0, 0]]), "hv", 8)
    assert (ln == A([[0, 8, 0], [8, 8, 8], [0, 8, 0]])).all()


def test_per_object_flips_each_object_in_place():
    g = A([[1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 3, 4]])
    out = dsl.per_object(g, step("flip", axis=1), conn=8, multi=1)
    assert (out == A([[2, 1, 0, 0], [0, 0, 0, 0], [0, 0, 4, 3]])).all()


def test_fitted_colour_map_tiling_window_and_local_rule():
    rng = np.random.default_rng(0)
    ins = [rand_grid(rng) for _ in range(3)]
    perm = np.array([0, 3, 1, 2, 4, 5, 6, 7, 8, 9], dtype=np.uint8)
    outs = [perm[g] for g in ins]
    s = fit.fit_recolor(ins, outs)
    assert s is not None and all((dsl.run_step(s, g) == o).all() for g, o in zip(ins, outs, strict=True))
    assert fit.fit_recolor(ins, [np.zeros_like(o) + (k % 2) for k, o in enumerate(outs)]) is None
    tiled = [np.block([[g, g[:, ::-1]], [g[::-1], g[::-1, ::-1]]]) for g in ins]
    t = fit.fit_tiling(ins, tiled)
    assert t is not None and t.kw()["ops"] == ("id", "fx1", "fx0", "r2")
    assert all((dsl.run_step(t, g) == o).all() for g, o in zip(ins, tiled, strict=True))
    w = fit.fit_window(ins, [g[-3:, 2:4] for g in ins])
    assert w is not None and all((dsl.run_step(w, g) == g[-3:, 2:4]).all() for g in ins)
    # a local rule: background cells with a non-background 4-neighbour of colour 1 become 6
    lr_outs = []
    for g in ins:
        o = g.copy()
        near = np.zeros(g.shape, bool)
        near[1:] |= g[:-1] == 1
        near[:-1] |= g[1:] == 1
        near[:, 1:] |= g[:, :-1] == 1
        near[:, :-1] |= g[:, 1:] == 1
        o[(g == 0) & near] = 6
        lr_outs.append(o)
    fitted = rules.fit_table(ins, lr_outs, "sets", 0, loo=False)
    assert fitted is not None
    table, default = fitted
    st = step("local_rule", feat="sets", table=table, default=default)
    assert all((dsl.run_step(st, g) == o).all() for g, o in zip(ins, lr_outs, strict=True))


# ----------------------------------------------------------------------------- D4


def test_d4_composition_table_all_64_pairs():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 10, size=(3, 5)).astype(np.uint8)
    for a in range(8):
        for b in range(8):
            two = G.apply_d4(b, G.apply_d4(a, x))
            assert np.array_equal(two, G.apply_d4(G.COMPOSE[a][b], x)), (a, b)
            prog = (G.ELEMENT_NAMES[a], G.ELEMENT_NAMES[b])
            steps = tuple(s for s in (dsl.element_step(a), dsl.element_step(b)) if s is not None)
            canon = dsl.canonical(steps)
            assert len(canon) <= 1, prog
            assert np.array_equal(dsl.run(canon, x), two), prog


def test_d4_is_a_group_homomorphism():
    C, inv = G.COMPOSE, G.INVERSE
    assert all(C[0][a] == a == C[a][0] for a in range(8))
    assert all(C[a][inv[a]] == 0 == C[inv[a]][a] for a in range(8))
    for a in range(8):
        for b in range(8):
            for c in range(8):
                assert C[C[a][b]][c] == C[a][C[b][c]]
    # e -> the permutation of a square grid's cells it makes is a homomorphism: p(a then b) = p_a[p_b]
    idx = np.arange(16).reshape(4, 4)
    perm = {e: G.apply_d4(e, idx).ravel() for e in range(8)}
    for a in range(8):
        for b in range(8):
            assert np.array_equal(perm[a][perm[b]], perm[C[a][b]])
    assert len({p.tobytes() for p in perm.values()}) == 8
    assert sorted(G.ELEMENT_NAMES) == sorted(
        [
            "id",
            "rot90(k=1)",
            "rot90(k=2)",
            "rot90(k=3)",
            "flip(axis=0)",
            "flip(axis=1)",
            "transpose",
            "antitranspose",
        ]
    )
    assert np.array_equal(G.apply_d4(G.ELEMENT_OF["rot90(k=1)"], idx), np.rot90(idx))
    assert np.array_equal(G.apply_d4(G.ELEMENT_OF["flip(axis=1)"], idx), idx[:, ::-1])


def test_canonical_merges_runs_of_d4_steps():
    p = (step("rot90", k=1), step("flip", axis=0), step("crop_bbox"), step("rot90", k=2), step("rot90", k=2))
    c = dsl.canonical(p)
    e = G.COMPOSE[G.ELEMENT_OF["rot90(k=1)"]][G.ELEMENT_OF["flip(axis=0)"]]
    assert c == (dsl.element_step(e), step("crop_bbox"))
    x = rand_grid(np.random.default_rng(2))
    assert np.array_equal(dsl.run(c, x), dsl.run(p, x))
    assert dsl.canonical((step("flip", axis=1), step("flip", axis=1))) == ()


class _Ctx:
    bg = 0
    colours = (1, 2, 3)
    masks = (0,)
    paints = (1, 5)


def test_declared_d4_behaviour_holds():
    """A primitive declared equivariant commutes with every D4 element with the same parameters; a
    covariant one with some searched parameters (this is what licenses the search's pruning)."""
    rng = np.random.default_rng(3)
    grids = [rand_grid(rng, 6, 8, 0.3, 3), rand_grid(rng, 8, 6, 0.5, 3)]
    for name in dsl.SEARCHED:
        prim = dsl.REGISTRY[name]
        if prim.d4 not in ("equivariant", "covariant"):
            continue
        insts = dsl.instances(prim, _Ctx)
        for x in grids:
            outs = {s: dsl.run_step(s, x) for s in insts}
            keys = {s: (None if o is None else G.grid_key(o)) for s, o in outs.items()}
            for e in range(1, 8):
                gx = G.apply_d4(e, x)
                for s in insts:
                    got = dsl.run_step(s, gx)
                    want = None if got is None else G.grid_key(G.apply_d4(G.INVERSE[e], got))
                    if prim.d4 == "equivariant":
                        assert keys[s] == want, (show((s,)), e)
                    else:
                        assert want in set(keys.values()), (show((s,)), e)


# ----------------------------------------------------------------------------- program text


def test_program_text_round_trips():
    progs = [
        (),
        (step("crop_object", by="largest", conn=8), step("rot90", k=1)),
        (step("per_object", f=step("transpose"), conn=4), step("recolor", map=((1, 2), (3, 4)))),
        (
            step("local_rule", feat="n4", table=(((0, 1, 1, 0, 0), 2),)),
            step("tile_fit", ops=("id", "fx1", "blank", "r2")),
        ),
        (
            step("connect", axis="h", c=3),
            step("extend", dir="down", only=2),
            step("split_overlay", split="quad", order="p1032"),
        ),
        (step("crop_fixed", anchor="br", dr=1, dc=2, h=3, w=3), step("upscale", fy=1, fx=3)),
    ]
    for p in progs:
        text = show(p)
        assert parse(text) == p, text
        assert show(parse(text)) == text
    assert (
        show((step("crop_object", by="largest", conn=8), step("rot90", k=1)))
        == "x |> crop_object |> rot90(k=1)"
    )
    with pytest.raises(ValueError):
        parse("x |> no_such_step")
    with pytest.raises(ValueError):
        parse("x |> rot90(q=1)")


def test_cost_counts_primitives_then_parameters():
    one = (step("flip", axis=1),)
    two = (step("crop_bbox"), step("flip", axis=1))
    assert dsl.cost(one) < dsl.cost(two)
    assert dsl.cost((step("crop_object"),)) < dsl.cost((step("crop_object", by="smallest"),)) < 2


# ----------------------------------------------------------------------------- search


def _task(fn, n=4, seed=0, **kw):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n + 1):
        x = kw.get("make", rand_grid)(rng)
        pairs.append((x.astype(np.int64), fn(x).astype(np.int64)))
    return pairs[:n], pairs[n]


def _objects_grid(rng):
    g = np.zeros((10, 10), np.uint8)
    sizes = rng.permutation([1, 2, 3])
    for k, s in enumerate(sizes):
        r, c = 1 + 3 * k, int(rng.integers(0, 10 - s - 1))
        g[r : r + 1 + (s > 1), c : c + s] = rng.integers(1, 5)
        g[r, c] = rng.integers(5, 8)  # a second colour makes each object asymmetric
    return g


def test_search_finds_crop_largest_then_flip():
    train, (tx, ty) = _task(lambda g: P.crop_object(g, "largest", 8, 1)[:, ::-1], make=_objects_grid)
    res = S.solve(train, [tx], budget_cpu_s=10)
    assert res["found"]
    assert any(np.array_equal(a, ty) for a in res["attempts"][0])
    text = res["programs"][0][0]
    assert "crop_object" in text and "flip(axis=1)" in text
    assert "|> flip" not in text.split("crop_object")[0]  # the flip comes last (canonical order)


def test_search_finds_a_slide_toward_a_wall():
    train, (tx, ty) = _task(lambda g: P.slide(g, 2, "right"), make=_slide_grid)
    res = S.solve(train, [tx], budget_cpu_s=10)
    assert res["found"] and "slide(c=2" in res["programs"][0][0]
    assert any(np.array_equal(att, ty) for att in res["attempts"][0])


def _slide_grid(rng):
    g = np.zeros((8, 8), np.uint8)
    g[:, 7] = 8
    r, c = int(rng.integers(0, 6)), int(rng.integers(0, 4))
    g[r : r + 2, c : c + 2] = 2
    g[r, c + 1] = 0
    return g


def test_search_finds_a_composition_of_three_primitives():
    def f(g):
        return P.upscale(P.crop_object(g, "largest", 8, 1), 2, 2)[::-1]

    train, (tx, ty) = _task(f, make=_objects_grid)
    res = S.solve(train, [tx], budget_cpu_s=10)
    assert res["found"] and np.array_equal(res["attempts"][0][0], ty)
    prog = parse(res["programs"][0][0])
    assert len(prog) == 3  # three primitives (no two-step program explains these demonstrations)
    assert all(np.array_equal(dsl.run(prog, G.as_grid(x)), y) for x, y in train)


def test_search_finds_colour_map_and_scale():
    perm = np.array([0, 2, 3, 1, 5, 4, 6, 7, 8, 9], dtype=np.uint8)
    train, (tx, ty) = _task(lambda g: perm[g])
    res = S.solve(train, [tx], budget_cpu_s=5)
    assert res["found"] and np.array_equal(res["attempts"][0][0], ty)
    assert res["programs"][0][0].startswith("x |> recolor(map=")
    train, (tx, ty) = _task(lambda g: P.upscale(g, 3, 3), make=lambda r: rand_grid(r, 3, 4))
    res = S.solve(train, [tx], budget_cpu_s=5)
    assert res["found"] and np.array_equal(res["attempts"][0][0], ty)
    assert res["programs"][0][0] == "x |> upscale(fy=3, fx=3)"


def test_search_composes_d4_elements_into_one_and_prefers_shorter_programs():
    train, (tx, ty) = _task(lambda g: np.rot90(g, 1)[::-1])  # rot90 then flip = one element
    res = S.solve(train, [tx], budget_cpu_s=5)
    assert res["found"] and np.array_equal(res["attempts"][0][0], ty)
    prog = parse(res["programs"][0][0])
    assert len(prog) == 1 and dsl.d4_element(prog[0]) is not None
    # the text is a program: running it on the test input gives the attempt
    assert np.array_equal(dsl.run(prog, G.as_grid(tx)), ty)


def test_search_pairs_and_deduplicates_states():
    train, (tx, ty) = _task(lambda g: P.gravity(g, "left"))
    s = S._Search(train, [tx], 5.0, 2)
    s.run()
    assert s.solutions
    best = min(s.solutions, key=lambda r: r[0])
    assert show(best[2]) == "x |> gravity(dir=left)"
    assert len(s.seen) <= s.searched + 1  # every state is stored once
    for _, _, prog, _ in s.solutions:
        elems = [dsl.d4_element(st) is not None for st in prog]
        assert not any(a and b for a, b in zip(elems, elems[1:], strict=False))  # no D4 after D4


def test_colour_classes_and_precedence():
    ins = [A([[1, 0], [0, 2]]), A([[2, 0], [0, 1]])]
    outs = [A([[2, 0], [0, 1]]), A([[1, 0], [0, 2]])]
    classes = S.colour_classes(ins, outs, [A([[1, 2]]), A([[2, 1]])])
    assert (1, 2) in classes  # swapping 1 and 2 maps the task onto itself
    assert (3, 4, 5, 6, 7, 8, 9) in classes and (0,) in classes  # unused colours are interchangeable
    assert S.colour_classes(ins[:1], outs[:1], [A([[1, 2]])]).count((1, 2)) == 0
    cls_of = {c: cls for cls in classes for c in cls}
    assert S._precedence_ok([1], frozenset(), cls_of)
    assert not S._precedence_ok([2], frozenset(), cls_of)  # 2 only after 1
    assert S._precedence_ok([2], frozenset({1}), cls_of) and S._precedence_ok([1, 2], frozenset(), cls_of)
    assert S._precedence_ok([3], frozenset(), cls_of) and not S._precedence_ok([4], frozenset(), cls_of)


def test_budget_is_respected_and_fallback_is_the_input():
    rng = np.random.default_rng(7)
    train = [(rand_grid(rng, 12, 12, 0.5, 9).astype(np.int64), rng.integers(0, 10, (5, 7))) for _ in range(3)]
    test = rand_grid(rng, 12, 12, 0.5, 9).astype(np.int64)
    t0 = time.process_time()
    res = S.solve(train, [test], budget_cpu_s=1.0)
    used = time.process_time() - t0
    assert not res["found"]
    assert res["cpu_s"] <= 1.5 and used <= 2.5
    assert len(res["attempts"][0]) == 2 and len(res["programs"][0]) == 2
    assert any(np.array_equal(a, test) for a in res["attempts"][0])
    assert all(p.endswith("(fallback)") for p in res["programs"][0])
    assert res["searched"] > 0


def test_every_primitive_on_1x1_non_square_and_30x30_grids():
    """Every searched setting of every primitive returns None or a valid uint8 grid, and leaves its input
    as it was, on the extreme sizes ARC allows."""
    rng = np.random.default_rng(5)
    grids = [A([[3]]), rand_grid(rng, 2, 7, 0.5, 3), rand_grid(rng, 30, 30, 0.3, 3)]
    for name in dsl.SEARCHED:
        for s in dsl.instances(dsl.REGISTRY[name], _Ctx):
            for g in grids:
                before = g.copy()
                out = dsl.run_step(s, g)
                assert np.array_equal(g, before), show((s,))
                assert out is None or (out.dtype == np.uint8 and G.valid(out)), show((s,))

"""The ARC learner: homotopy distance identities, sparse example attention, a training step that
changes the outputs, padding that never leaks, and prediction shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoformer.data import arc as A
from geoformer.geometry import d4
from geoformer.models.arc_learner import (
    ArcLearner,
    ExampleAttention,
    LearnerConfig,
    TaskBatch,
    fit,
    homotopy_distance,
    per_pixel_sq,
    predict,
    solve_task,
)

SMALL = dict(channels=4, depth=2, hidden=8, feat_dim=8, adapter_rank=2)


def _pairs(shapes, seed=0, fn=lambda x: (x + 1) % 10):
    rng = np.random.default_rng(seed)
    return [(x, fn(x)) for x in (rng.integers(0, 10, s) for s in shapes)]


def _model(pairs, seed=0, **kw):
    torch.manual_seed(seed)
    return ArcLearner(len(pairs), LearnerConfig(**{**SMALL, **kw})), TaskBatch.from_pairs(pairs)


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))


def _morphisms(model, batch):
    """f* and f_0 as functions of raw encoded grids (running the encoder every call)."""
    f = model.encoder(batch.x, batch.mask)
    bias, bias_star = model.context(f, batch.mask, batch.hist_in, batch.hist_out)
    f_star = lambda x, m: model.canonical(model.encoder(x, m), m, bias_star)
    f_i = lambda i: lambda x, m: model.individual(model.encoder(x, m), m, bias[i].expand(x.shape[0], -1))
    return f, bias, bias_star, f_star, f_i


def _d4_images(a):
    """The 8 images of an (..., H, W) array under D4, with numpy only (k quarter turns of a or of its mirror):
    an enumeration of the group independent of :mod:`geoformer.geometry.d4` and its element numbering."""
    return [np.rot90(b, k, axes=(-2, -1)) for b in (a, np.flip(a, -1)) for k in range(4)]


def _sq_per_pixel(d, m):
    """sum_c d[c, p]^2 averaged over the pixels p with m[0, p] = 1, by an explicit pixel loop."""
    tot = sum(float((d[:, i, j] ** 2).sum()) for i, j in np.ndindex(*m.shape[-2:]) if m[0, i, j])
    return tot / m.sum()


def ref_d_h(f_star, f_i, x, m):
    """d_H(f*, f_i) by its definition, independently: numpy loops over the grids, the 8 group elements (as
    :func:`_d4_images`) and the pixels; the maps are called one grid at a time."""
    call = lambda f, a, mm: f(torch.from_numpy(a.copy())[None], torch.from_numpy(mm.copy())[None])[0].numpy()
    geo, eq = [], []
    for xb, mb in zip(x.numpy(), m.numpy(), strict=True):
        ys = call(f_star, xb, mb)
        geo.append(_sq_per_pixel(ys - call(f_i, xb, mb), mb))
        for gx, gm, gy in zip(_d4_images(xb), _d4_images(mb), _d4_images(ys), strict=True):
            eq.append(_sq_per_pixel(call(f_star, gx, gm) - gy, gm))
    return np.mean(geo), np.mean(eq)


def _grids(seed=0, shapes=((4, 6), (5, 5), (3, 4)), channels=3):
    """Random float64 fields on padded canvases of different grid sizes, with their masks."""
    g = torch.Generator().manual_seed(seed)
    H, W = max(h for h, _ in shapes), max(w for _, w in shapes)
    m = torch.zeros(len(shapes), 1, H, W, dtype=torch.float64)
    for k, (h, w) in enumerate(shapes):
        m[k, :, :h, :w] = 1
    return torch.randn(len(shapes), channels, H, W, generator=g, dtype=torch.float64) * m, m


def test_homotopy_distance_of_pointwise_maps_is_exact():
    """Pixelwise maps commute with every pixel permutation, so their equivariance defect is exactly 0 and
    d_H(f*, f_i) is the mean per-pixel ||f* - f_i||^2 alone: exactly ||c||^2 for a constant offset c."""
    x, m = _grids()
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    f = lambda t, mm: (2 * t + 1) * mm
    f_c = lambda t, mm: f(t, mm) + c * mm
    perm = lambda t, mm: t[:, [2, 0, 1]] * mm  # a colour permutation: equivariant too
    assert homotopy_distance(f, f, x, m).item() == 0.0
    assert homotopy_distance(f, f_c, x, m).item() == 14.0  # 1 + 4 + 9, every pixel
    assert homotopy_distance(f_c, f, x, m).item() == 14.0
    geo, eq = ref_d_h(f, perm, x, m)
    assert eq == 0.0
    torch.testing.assert_close(homotopy_distance(f, perm, x, m).item(), geo, rtol=1e-13, atol=0)


def test_homotopy_distance_of_a_position_dependent_map():
    """f(x)[c, h, w] = (w + 1) x[c, h, w] weighs each pixel by its column on the canvas: not equivariant (a
    quarter turn sends columns to rows). Its d_H(f, f) is exactly its defect, computed independently by
    :func:`ref_d_h`; adding an offset c to either map adds exactly ||c||^2."""
    x, m = _grids(seed=1)

    def f(t, mm):
        return t * (torch.arange(t.shape[-1], dtype=t.dtype) + 1) * mm

    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    f_c = lambda t, mm: f(t, mm) + c * mm
    geo, eq = ref_d_h(f, f, x, m)
    assert geo == 0.0 and eq > 1.0
    torch.testing.assert_close(homotopy_distance(f, f, x, m).item(), eq, rtol=1e-12, atol=0)
    torch.testing.assert_close(homotopy_distance(f, f_c, x, m).item(), eq + 5.25, rtol=1e-12, atol=0)
    torch.testing.assert_close(homotopy_distance(f_c, f, x, m).item(), eq + 5.25, rtol=1e-12, atol=0)
    assert sum(ref_d_h(f_c, f, x, m)) == pytest.approx(eq + 5.25, rel=1e-12)


@pytest.mark.parametrize("breaking", [False, True])
def test_homotopy_distance_of_the_learner_against_its_definition(breaking):
    """The learner's own morphisms in float64: for an equivariant head d_H(f*, f*) = 0 (to round-off: the
    rotated kernels sum in another order) and d_H(f*, f_i) is the plain per-pixel distance; with a breaking
    head d_H(f*, f*) is the defect and d_H(f*, f_i) = distance + defect, both against :func:`ref_d_h`."""
    pairs = _pairs([(4, 6), (5, 5), (3, 4)])
    model, batch = _model(pairs, breaking=breaking)
    model.double()
    _perturb(model)
    x, m = batch.x.double(), batch.mask.double()
    with torch.no_grad():
        f = model.encoder(x, m)
        bias, bias_star = model.context(f, m, batch.hist_in.double(), batch.hist_out.double())
        f_star = lambda t, mm: model.canonical(model.encoder(t, mm), mm, bias_star)
        for i in range(3):
            f_i = lambda t, mm, i=i: model.individual(model.encoder(t, mm), mm, bias[i].expand(t.shape[0], -1))
            geo, eq = ref_d_h(f_star, f_i, x, m)
            assert geo > 1e-2 and ((eq > 1e-3) if breaking else (eq < 1e-20))
            d = homotopy_distance(f_star, f_i, x, m).item()
            torch.testing.assert_close(d, geo + eq, rtol=1e-10, atol=1e-12)
        d_ff = homotopy_distance(f_star, f_star, x, m).item()  # f* = f_i: the defect term alone
        torch.testing.assert_close(d_ff, ref_d_h(f_star, f_star, x, m)[1], rtol=1e-10, atol=1e-20)
        assert (d_ff > 1e-3) if breaking else (d_ff < 1e-20)


def test_homotopy_normaliser_does_not_depend_on_the_group():
    """Seed bug: the normaliser was overwritten by the group-sample count. Ours is an exact mean."""
    x, m = torch.zeros(2, 1, 3, 5), torch.ones(2, 1, 3, 5)
    zero = lambda t, mm: torch.zeros(t.shape[0], 3, *t.shape[-2:])
    const = lambda t, mm: torch.full((t.shape[0], 3, *t.shape[-2:]), 3.0)
    assert homotopy_distance(zero, const, x, m).item() == pytest.approx(27.0)  # 3 channels x 3^2
    assert per_pixel_sq(torch.ones(1, 2, 3, 5), torch.ones(1, 1, 3, 5)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("breaking", [False, True])
def test_fast_homotopy_terms_match_the_definition(breaking, dtype):
    """The fast path uses E(g.x) = g.E(x) instead of encoding the 8 transformed grids: equal to the reference to
    round-off (float64: 1e-10 relative; float32: the encoder's own equivariance holds to ~1e-6)."""
    pairs = _pairs([(4, 6), (5, 5), (3, 7)], seed=1)
    model, batch = _model(pairs, breaking=breaking)
    model.to(dtype)
    _perturb(model)
    for key in ("x", "mask", "hist_in", "hist_out"):
        setattr(batch, key, getattr(batch, key).to(dtype))
    f, bias, bias_star, f_star, f_i = _morphisms(model, batch)
    with torch.no_grad():
        can = model.canonical(f, batch.mask, bias_star)
        fast = model.homotopy_terms(f, batch.mask, bias, bias_star, can)
        ref = torch.stack([homotopy_distance(f_star, f_i(i), batch.x, batch.mask) for i in range(3)])
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(fast, ref, **tol)


TINY = dict(channels=2, depth=1, hidden=4, feat_dim=4, adapter_rank=1, skip=False)


class _Call(torch.nn.Module):
    """Holds ``model`` so that ``torch.func.functional_call`` can swap its weights around any function of it."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(*args)


def with_weights(model, params, values, fn, *args):
    """``fn(*args)`` with the named parameters of ``model`` replaced by ``values`` (differentiable inputs)."""
    swap = {f"model.{n}": v for n, v in zip(params, values, strict=True)}
    return torch.func.functional_call(_Call(model, fn), swap, args)


def _relu_inputs(model):
    """Forward hooks recording every tensor that reaches a ReLU (the heads' inner 1x1 convs and the encoder's
    norms): gradcheck is only meaningful away from the ReLU kink."""
    seen, hooks = [], []
    for mod in model.modules():
        if type(mod).__name__ == "MaskedNorm" or mod in (model.head.inner, model.canonical_head.inner):
            hooks.append(mod.register_forward_hook(lambda _m, _a, out: seen.append(out.detach())))
    return seen, hooks


def _assert_away_from_kinks(seen):
    """No ReLU input within 1e-4 of 0 (eps = 1e-6 moves them by ~1e-5 at most), except exact zeros, which are
    the padding: every layer multiplies by the mask there, so no perturbation moves them off 0."""
    vals = torch.cat([t.flatten() for t in seen]).abs()
    assert vals[vals > 0].min() > 1e-4


def test_homotopy_terms_gradcheck():
    """float64 Jacobian check of the training loss's d_H term as fit() builds it, (f, bias, bias*, weights) ->
    homotopy_terms(f, mask, bias, bias*, canonical(f, mask, bias*)), on a 2 x 2 and a padded 2 x 1 grid."""
    pairs = _pairs([(2, 2), (2, 1)], seed=6)
    torch.manual_seed(0)
    model = ArcLearner(2, LearnerConfig(**TINY, breaking=True)).double()
    _perturb(model)
    batch = TaskBatch.from_pairs(pairs)
    x, m = batch.x.double(), batch.mask.double()
    with torch.no_grad():
        f = model.encoder(x, m)
        bias, bias_star = model.context(f, m, batch.hist_in.double(), batch.hist_out.double())
    weights = ["canonical_head.breaking.weight", "head.inner.weight"]
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if n in weights}

    def fn(f, bias, bias_star, *ps):
        def run(f, bias, bias_star):
            return model.homotopy_terms(f, m, bias, bias_star, model.canonical(f, m, bias_star))

        return with_weights(model, params, ps, run, f, bias, bias_star)

    seen, hooks = _relu_inputs(model)
    with torch.no_grad():
        out = fn(f, bias, bias_star, *params.values())
    for h in hooks:
        h.remove()
    _assert_away_from_kinks(seen)
    assert out.shape == (2,) and (out > 1e-3).all()
    inputs = (f.clone().requires_grad_(), bias.clone().requires_grad_(), bias_star.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, (*inputs, *params.values()), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_homotopy_distance_gradcheck():
    """The reference d_H w.r.t. the input grids and the weights of both maps: (1) two non-equivariant 3x3
    convolutions (full Jacobian); (2) the learner's own f* and f_i through the encoder (fast_mode: random
    projections of the Jacobian, the full one would need ~10^3 encoder passes per column)."""
    x, m = _grids(seed=2, shapes=((3, 4), (4, 2)), channels=2)
    g = torch.Generator().manual_seed(3)
    w1, w2 = (torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(2))

    def fn(x, w1, w2):
        conv = lambda w: lambda t, mm: torch.nn.functional.conv2d(t * mm, w, padding=1) * mm
        return homotopy_distance(conv(w1), conv(w2), x, m)

    args = tuple(t.clone().requires_grad_() for t in (x, w1, w2))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)

    pairs = _pairs([(2, 3), (3, 2)], seed=6)
    torch.manual_seed(0)
    model = ArcLearner(2, LearnerConfig(**TINY, breaking=True)).double()
    _perturb(model)
    batch = TaskBatch.from_pairs(pairs)
    xb, mb = batch.x.double(), batch.mask.double()
    with torch.no_grad():
        bias, bias_star = model.context(model.encoder(xb, mb), mb, batch.hist_in.double(), batch.hist_out.double())
    names = ["canonical_head.breaking.weight", "encoder.lift.weight"]
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if n in names}

    def fm(x, *ps):
        f_star = lambda t, mm: model.canonical(model.encoder(t, mm), mm, bias_star)
        f_0 = lambda t, mm: model.individual(model.encoder(t, mm), mm, bias[0].expand(t.shape[0], -1))
        return with_weights(model, params, ps, lambda x: homotopy_distance(f_star, f_0, x, mb), x)

    seen, hooks = _relu_inputs(model)
    with torch.no_grad():
        fm(xb, *params.values())
    for h in hooks:
        h.remove()
    _assert_away_from_kinks(seen)
    assert torch.autograd.gradcheck(
        fm, (xb.clone().requires_grad_(), *params.values()), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True
    )


def _reference_example_attention(att, z, keep):
    """``z + softmax(s) v(z)`` with ``s_ij = q_i . k_j / (tau sqrt(d))`` over the keys ``keep[i]`` (explicit loops)."""
    q, k, v = att.q(z), att.k(z), att.v(z)
    out = z.clone()
    for i, js in enumerate(keep):
        s = torch.stack([q[i] @ k[j] for j in js]) / (att.tau * math.sqrt(z.shape[1]))
        out[i] = out[i] + (torch.softmax(s, 0)[:, None] * v[js]).sum(0)
    return out


def test_example_attention_dense_sparse_and_single():
    """N = 8 examples: top_k = 2 < N - 1 keeps each row's 2 best other examples, top_k = 7 = N - 1 is dense.
    Both equal an explicit softmax over exactly those keys (float64, 1e-12), and they differ: the dense rows
    see 5 keys the sparse rows drop."""
    torch.manual_seed(0)
    sparse = ExampleAttention(8, top_k=2, tau=0.7).double()
    dense = ExampleAttention(8, top_k=7, tau=0.7).double()
    dense.load_state_dict(sparse.state_dict())
    z = torch.randn(8, 8, dtype=torch.float64)
    n = z.shape[0]
    raw = sparse.q(z) @ sparse.k(z).T / (0.7 * math.sqrt(8))
    others = [[j for j in range(n) if j != i] for i in range(n)]
    best = [sorted(js, key=lambda j, i=i: -raw[i, j].item())[:2] for i, js in enumerate(others)]
    for i, js in enumerate(others):  # no near-ties at the cut: the top-2 choice is unambiguous
        ranked = sorted((raw[i, j].item() for j in js), reverse=True)
        assert ranked[1] - ranked[2] > 1e-6
    w_sparse, w_dense = torch.softmax(sparse.scores(z), -1), torch.softmax(dense.scores(z), -1)
    assert torch.all(w_sparse.diagonal() == 0) and torch.all(w_dense.diagonal() == 0)
    assert [sorted(torch.nonzero(r).flatten().tolist()) for r in w_sparse] == [sorted(b) for b in best]
    assert torch.all((w_dense > 0).sum(-1) == n - 1)
    y_sparse, y_dense = sparse(z), dense(z)
    torch.testing.assert_close(y_sparse, _reference_example_attention(sparse, z, best), rtol=0, atol=1e-12)
    torch.testing.assert_close(y_dense, _reference_example_attention(dense, z, others), rtol=0, atol=1e-12)
    # the difference is exactly the reweighting the mask implies
    torch.testing.assert_close(y_dense - y_sparse, (w_dense - w_sparse) @ sparse.v(z), rtol=0, atol=1e-12)
    assert (y_dense - y_sparse).abs().max() > 1e-2
    # the sparse weights are the dense ones restricted to the kept keys and renormalised
    kept = w_sparse > 0
    renorm = torch.where(kept, w_dense, 0) / torch.where(kept, w_dense, 0).sum(-1, keepdim=True)
    torch.testing.assert_close(w_sparse, renorm, rtol=0, atol=1e-14)
    assert torch.equal(sparse(z[:1]), z[:1])  # one example: nothing else to attend to


def test_a_training_step_changes_the_outputs():
    """Regression for the pointer-keyed kernel cache that froze the canonical loss."""
    pairs = _pairs([(4, 4), (4, 4), (4, 4)])
    model, batch = _model(pairs, steps=1, early_stop=False)
    f = model.encoder(batch.x, batch.mask)
    _, bs = model.context(f, batch.mask, batch.hist_in, batch.hist_out)
    before = model.canonical(f, batch.mask, bs).detach().clone()
    enc_before = f.detach().clone()
    fit(model, batch)
    f2 = model.encoder(batch.x, batch.mask)
    _, bs2 = model.context(f2, batch.mask, batch.hist_in, batch.hist_out)
    assert not torch.allclose(f2, enc_before)
    assert not torch.allclose(model.canonical(f2, batch.mask, bs2), before)


def test_padding_never_leaks_into_predictions():
    pairs = _pairs([(3, 7), (6, 4), (5, 5)], seed=2)
    model, batch = _model(pairs)
    _perturb(model)
    with torch.no_grad():
        f = model.encoder(batch.x, batch.mask)
        _, bs = model.context(f, batch.mask, batch.hist_in, batch.hist_out)
        ref = model.canonical(f, batch.mask, bs)
        noisy = batch.x + torch.randn_like(batch.x) * (1 - batch.mask)  # garbage only in the padding
        f2 = model.encoder(noisy, batch.mask)
        _, bs2 = model.context(f2, batch.mask, batch.hist_in, batch.hist_out)
        torch.testing.assert_close(model.canonical(f2, batch.mask, bs2), ref, atol=1e-6, rtol=1e-6)
        for k, (x, _) in enumerate(pairs):  # each grid alone gives the same canonical logits
            xa, ma = A.encode([A.canvas(x, x.shape)])
            alone = model.canonical(model.encoder(xa, ma), ma, bs)
            h, w = x.shape
            torch.testing.assert_close(alone[0], ref[k, :, :h, :w], atol=1e-5, rtol=1e-5)
            assert (ref[k] * (1 - batch.mask[k])).abs().sum() == 0


def test_equivariant_learner_predictions_commute_with_d4():
    pairs = _pairs([(3, 5), (4, 4)], seed=3)
    model, batch = _model(pairs, breaking=False)
    _perturb(model)
    x = np.random.default_rng(0).integers(0, 10, (3, 6))
    p = predict(model, batch, x, x.shape, tta=False, attempts=1)[0]
    for g in range(8):
        xg = d4.act(torch.from_numpy(x), g).numpy()
        pg = predict(model, batch, xg, xg.shape, tta=False, attempts=1)[0]
        assert np.array_equal(pg, d4.act(torch.from_numpy(p), g).numpy())


def test_solve_task_gives_two_attempts_of_the_predicted_size():
    pairs = _pairs([(2, 3), (3, 3), (2, 2)], fn=lambda x: np.tile(x, (2, 2)))
    test_in = np.random.default_rng(5).integers(0, 10, (3, 2))
    task = A.ArcTask(id="t", train=tuple(pairs), test=((test_in, np.tile(test_in, (2, 2))),))
    res = solve_task(task, LearnerConfig(**SMALL, steps=3), seed=0, budget_s=30)
    assert res["size_rules"] == ["ratio"]
    assert 1 <= len(res["attempts"][0]) <= 2
    assert all(a.shape == (6, 4) for a in res["attempts"][0])
    assert res["fit"]["steps"] <= 3


def test_fit_learns_a_colour_map():
    pairs = _pairs([(4, 4)] * 3, seed=4)
    model, batch = _model(pairs, steps=150, early_stop=True, phase1_frac=1.0)
    res = fit(model, batch)
    assert res.fitted and res.stopped_by == "fitted"


def test_arc_claims_are_registered_and_the_synthetic_task_is_the_seeds():
    from geoformer.claims import all_rows
    from geoformer.claims.seed000 import parameter_counts, synthetic_task

    rows = all_rows()
    for cid in ("000-homotopy-collapse", "000-arc-accuracy", "000-adapter-parameter-savings"):
        c = rows[cid]
        assert c.claim and "homotopy-nn" in c.source and c.experiment and c.rule
    counts = parameter_counts(10)
    assert counts["separate_networks"] == 10 * counts["individual_network"] > counts["total"]
    demos, held = synthetic_task()
    assert len(demos) == 3 and len(held) == 20
    for x, y in demos + held:
        assert x.shape == (5, 5) and np.array_equal(y, (x + 1) % 10)

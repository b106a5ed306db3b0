"""The ARC learner: homotopy distance identities, sparse example attention, a training step that
changes the outputs, padding that never leaks, and prediction shapes."""

from __future__ import annotations

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


def test_homotopy_distance_identities():
    pairs = _pairs([(4, 6), (5, 5), (3, 4)])
    model, batch = _model(pairs, breaking=False)
    _perturb(model)
    _, _, _, f_star, f_i = _morphisms(model, batch)
    x, m = batch.x, batch.mask
    with torch.no_grad():
        assert homotopy_distance(f_star, f_star, x, m).abs() < 1e-9  # equivariant f: d_H(f, f) = 0
        for i in range(3):
            assert homotopy_distance(f_star, f_i(i), x, m) >= 0
            assert homotopy_distance(f_i(i), f_star, x, m) >= 0
    model_b, _ = _model(pairs, breaking=True)
    _perturb(model_b)
    _, _, _, fb, _ = _morphisms(model_b, batch)
    with torch.no_grad():  # d_H(f, f) is f's equivariance defect: not a metric for non-equivariant f
        assert homotopy_distance(fb, fb, x, m) > 1e-4


def test_homotopy_normaliser_does_not_depend_on_the_group():
    """Seed bug: the normaliser was overwritten by the group-sample count. Ours is an exact mean."""
    x, m = torch.zeros(2, 1, 3, 5), torch.ones(2, 1, 3, 5)
    zero = lambda t, mm: torch.zeros(t.shape[0], 3, *t.shape[-2:])
    const = lambda t, mm: torch.full((t.shape[0], 3, *t.shape[-2:]), 3.0)
    assert homotopy_distance(zero, const, x, m).item() == pytest.approx(27.0)  # 3 channels x 3^2
    assert per_pixel_sq(torch.ones(1, 2, 3, 5), torch.ones(1, 1, 3, 5)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("breaking", [False, True])
def test_fast_homotopy_terms_match_the_definition(breaking):
    pairs = _pairs([(4, 6), (5, 5), (3, 7)], seed=1)
    model, batch = _model(pairs, breaking=breaking)
    _perturb(model)
    f, bias, bias_star, f_star, f_i = _morphisms(model, batch)
    with torch.no_grad():
        can = model.canonical(f, batch.mask, bias_star)
        fast = model.homotopy_terms(f, batch.mask, bias, bias_star, can)
        ref = torch.stack([homotopy_distance(f_star, f_i(i), batch.x, batch.mask) for i in range(3)])
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


def test_example_attention_dense_sparse_and_single():
    torch.manual_seed(0)
    att = ExampleAttention(8, top_k=2)
    z = torch.randn(6, 8)
    w = torch.softmax(att.scores(z), dim=-1)
    assert torch.all(w.diagonal() == 0)
    assert torch.all((w > 0).sum(dim=-1) == 2)  # top-2 of 5 candidates
    z4 = torch.randn(3, 8)
    assert torch.all((torch.softmax(att.scores(z4), -1) > 0).sum(-1) == 2)  # k >= N - 1: dense
    assert torch.equal(att(z[:1]), z[:1])


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

"""The level-structured GPT, its exactness penalty and the exactness diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from geoformer import config as C
from geoformer.diagnostics import exactness as ex
from geoformer.errors import GeoformerError
from geoformer.models import GPT, GPTConfig, LevelGPT, build_model, names
from geoformer.models.levels import exactness_penalty, split_layers
from tests.conftest import tiny_config

# cochain complex of a triangle: vertices -> edges (e01, e12, e02) -> the face [012]
D0_TRI = torch.tensor([[-1.0, 1, 0], [0, -1, 1], [-1, 0, 1]], dtype=torch.float64)
D1_TRI = torch.tensor([[1.0, 1, -1]], dtype=torch.float64)


def level_cfg(**levels) -> GPTConfig:
    return GPTConfig(
        vocab_size=13, block_size=16, n_layer=3, n_head=2, n_embd=16, arch="levels", levels=levels
    )


# ------------------------------------------------------------------ diagnostics on hand-built complexes
def test_triangle_cohomology():
    assert torch.count_nonzero(D1_TRI @ D0_TRI) == 0
    assert ex.cohomology_dims([D0_TRI]) == [1, 1]  # hollow triangle (a circle): H^0 = H^1 = 1
    assert ex.cohomology_dims([D0_TRI, D1_TRI]) == [1, 0, 0]  # filled triangle (a disc)
    assert ex.complex_defect(D0_TRI, D1_TRI) == 0.0
    assert ex.subspace_match(D0_TRI, D1_TRI) == pytest.approx(1.0, rel=0, abs=1e-12)  # exact at the edges
    # d0 d0^T + d1^T d1 = 3 I on the triangle's edges (by hand), so the smallest eigenvalue is 3
    torch.testing.assert_close(D0_TRI @ D0_TRI.T + D1_TRI.T @ D1_TRI, 3 * torch.eye(3, dtype=torch.float64), rtol=0, atol=0)
    assert ex.hodge_min_eig(D0_TRI, D1_TRI) == pytest.approx(3.0, rel=0, abs=1e-12)
    hollow_out = torch.zeros(0, 3, dtype=torch.float64)
    assert ex.hodge_min_eig(D0_TRI, hollow_out) == pytest.approx(0.0, abs=1e-12)  # harmonic 1-cochain


def test_short_exact_sequence_and_non_complex():
    d0 = torch.tensor([[1.0], [0.0]])  # R -> R^2
    d1 = torch.tensor([[0.0, 1.0]])  # R^2 -> R
    assert ex.cohomology_dims([d0, d1]) == [0, 0, 0]
    exact = pytest.approx  # these are ratios of 0s and 1s: exact in float64 up to the SVD's last bit
    assert ex.exactness_report([d0, d1])["subspace_match"] == [exact(1.0, rel=0, abs=1e-12)]
    bad = torch.tensor([[1.0, 0.0]])  # kills the wrong direction: d1 d0 != 0
    assert ex.complex_defect(d0, bad) == 1.0  # ||bad d0|| = ||bad||_2 = ||d0|| = 1
    assert ex.cohomology_dims([d0, bad])[1] == 0  # ranks alone cannot see it ...
    assert ex.subspace_match(d0, bad) == exact(0.0, rel=0, abs=1e-12)  # ... the subspace test does
    too_small = torch.tensor([[0.0, 0.0]])  # d1 = 0: ker d1 = R^2 > im d0, H^1 = 1
    assert ex.cohomology_dims([d0, too_small])[1] == 1
    assert ex.subspace_match(d0, too_small) == exact(0.5, rel=0, abs=1e-12)  # |<e1, ker>|^2 / max(1, 2)


def test_numerical_rank_tolerance():
    a = torch.diag(torch.tensor([1.0, 1e-3, 0.0]))
    assert ex.numerical_rank(a) == 2
    assert ex.numerical_rank(a, rtol=1e-2) == 1
    k = ex.kernel_basis(a, rtol=1e-2)
    assert k.shape == (3, 2)
    torch.testing.assert_close(k.T @ k, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)) @ k,
                               torch.zeros(3, 2, dtype=torch.float64), rtol=0, atol=1e-12)  # fmt: skip


# ------------------------------------------------------------------ the penalty
def test_penalty_values_and_scale_invariance():
    """float64 throughout: E(I, I) = ||I||^2 / (1 * ||I||^2) = 1 and the triangle's integer composite is exactly
    0; scale invariance and E = complex_defect^2 are identities, met to the SVD's round-off (1e-12)."""
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(5, dtype=torch.float64)
    assert exactness_penalty([eye, eye]).item() == pytest.approx(1.0, rel=0, abs=1e-12)
    assert exactness_penalty([D0_TRI, D1_TRI]).item() == 0.0
    a, b = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    e = exactness_penalty([a, b]).item()
    assert 0.0 < e <= 1.0
    for s0, s1 in ((3.0, 0.01), (1e-3, 1e3), (-2.0, 7.0)):
        assert exactness_penalty([s0 * a, s1 * b]).item() == pytest.approx(e, rel=1e-12)
    assert e == pytest.approx(ex.complex_defect(a, b) ** 2, rel=1e-12)
    # by hand: ||b a||_F^2 / (sigma_max(b)^2 ||a||_F^2), sigma_max from the eigenvalues of b^T b
    top = torch.linalg.eigvalsh(b.T @ b).max()
    assert e == pytest.approx(((b @ a).square().sum() / (top * a.square().sum())).item(), rel=1e-12)
    # the mean over consecutive pairs
    c = torch.randn(3, 4, generator=g, dtype=torch.float64)
    e2 = exactness_penalty([b, c]).item()
    assert exactness_penalty([a, b, c]).item() == pytest.approx((e + e2) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        exactness_penalty([a])


def test_penalty_gradcheck():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: exactness_penalty([x, y]), (a, b))


# ------------------------------------------------------------------ the model
def matched_excess(C, L, bias, rank=0):
    """LevelGPT params - GPT params, by hand: the maps add ``extra = 2 C^2`` (+ ``C * rank`` for Z), and each
    of the ``round(extra / u)`` hidden units removed from every block's MLP saves ``u = L (2C + bias)``."""
    extra = 2 * C * C + C * rank
    u = L * (2 * C + int(bias))
    return extra - u * round(extra / u), u


@pytest.mark.parametrize(
    "n_embd,n_layer,bias", [(16, 3, False), (32, 4, False), (64, 3, True), (48, 6, False)]
)
def test_parameter_count_matches_gpt(n_embd, n_layer, bias):
    """"Within one hidden unit per block" exactly: the excess is the hand-computed remainder, at most u / 2."""
    base = GPTConfig(vocab_size=65, block_size=32, n_layer=n_layer, n_head=4, n_embd=n_embd, bias=bias)
    lvl = GPTConfig(**{**base.__dict__, "arch": "levels", "levels": {}})
    a, b = GPT(base).num_params(), build_model(lvl).num_params()
    excess, u = matched_excess(n_embd, n_layer, bias)
    assert b - a == excess and abs(excess) <= u / 2, (a, b)


def test_layout_and_ablation_without_transitions():
    m = LevelGPT(level_cfg())
    assert m.level_of == [0, 1, 2]
    assert [type(b.attn).kind for b in m.blocks] == ["local", "topk", "sdpa"]
    assert len(m.trans) == 2 and split_layers(7, 3) == [3, 2, 2]
    plain = LevelGPT(level_cfg(transitions=False))
    assert len(plain.trans) == 0 and plain.hidden == 4 * 16
    assert (
        plain.num_params()
        == GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=3, n_head=2, n_embd=16)).num_params()
    )


def test_penalty_only_in_training_and_causal():
    torch.manual_seed(0)
    m = LevelGPT(level_cfg(exactness=0.5, window=3, k=2)).double()
    x = torch.randint(0, 13, (2, 16))
    m.eval()
    _, ce = m(x, x)
    m.train()
    _, total = m(x, x)
    # float64 loss: total = ce + 0.5 E with the same E (computed deterministically), so equal to round-off
    assert (total - ce).item() == pytest.approx(0.5 * m.exactness().item(), rel=1e-12)
    # identity initialisation: d_k = P, E = ||P P||^2 / (sigma_max(P)^2 ||P||^2) = 1 exactly (P^2 = P, |P|_2 = 1)
    assert exactness_penalty(m.transition_maps()).item() == pytest.approx(1.0, rel=0, abs=1e-12)
    # approximate: exactness() evaluates E in float32 (w.float()) with an SVD for sigma_max, so 1 to ~1e-6
    assert m.exactness().item() == pytest.approx(1.0, rel=0, abs=4 * torch.finfo(torch.float32).eps * 16)
    m.eval()
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 1) % 13
    torch.testing.assert_close(m(x)[0][:, :9], m(x2)[0][:, :9], rtol=0, atol=1e-12)
    assert (m(x)[0][:, 9:] - m(x2)[0][:, 9:]).abs().max() > 1e-3  # the later positions do see the change


def test_config_errors_and_registry(corpus):
    assert names() == ["gpt", "levels"]
    cfg = tiny_config(corpus)
    assert cfg.model.arch == "gpt" and cfg.model.levels == {}
    raw = {"model": {"n_layer": 3}}
    C.build_config(raw, [("model.arch", "levels"), ("model.levels.exactness", 1.0)])
    bad = [
        ([("model.arch", "nope")], "unknown model.arch"),
        ([("model.arch", "levels"), ("model.levels.layers", [1, 1])], "needs 3 positive counts"),
        ([("model.arch", "levels"), ("model.levels.layers", [1, 1, 2])], "sums to 4"),
        ([("model.arch", "levels"), ("model.levels.kinds", ["local", "bogus"])], "known kinds"),
        ([("model.arch", "levels"), ("model.levels.wat", 1)], "unknown key model.levels.wat"),
        ([("model.levels.k", 3)], "only used with"),
        ([("model.arch", "levels"), ("model.levels.exactness", -1.0)], "exactness must be"),
    ]
    for sets, msg in bad:
        with pytest.raises(GeoformerError, match=msg):
            C.build_config(raw, sets)


def test_existing_presets_still_load():
    for name in C.preset_names():
        C.build_config(C.load_raw(preset=name))


def test_training_reduces_exactness_and_reloads(corpus, tmp_path):
    from geoformer.train.trainer import Trainer, load_model

    cfg = tiny_config(corpus, max_iters=30, eval_interval=30, lr=1e-2)
    cfg = C.build_config(
        cfg.to_dict(),
        [("model.n_layer", 3), ("model.arch", "levels"), ("model.levels.exactness", 5.0)],
    )
    tr = Trainer(cfg, tmp_path / "run", quiet=True)
    summary = tr.fit()
    assert summary["completed"]
    model, _, _ = load_model(tmp_path / "run")
    assert isinstance(model, LevelGPT)
    # approximate by nature: 30 steps of a penalised loss only lower E (from exactly 1 at initialisation)
    assert model.exactness().item() < 0.5
    rep = ex.exactness_report([w.detach() for w in model.transition_maps()])
    assert len(rep["complex_defect"]) == 1 and len(rep["cohomology_dims"]) == 3


def test_vanishing_penalty_means_the_network_composite_vanishes():
    """E = 0 iff the two transitions, as the network applies them, compose to zero.

    W_0 has rank 5, so im(P W_0 P) is 5-dimensional and W_1 = R (I - Q Q^T) (Q its basis) is a rank-10 d_1 = W_1 P:
    a non-trivial exact pair. (With a full-rank W_0, im(P W_0 P) is all of 1^perp and the only such d_1 is 0.)"""
    torch.manual_seed(0)
    m = LevelGPT(level_cfg(window=3, k=2)).double().eval()
    C = 16
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.blocks[1].attn.c_proj.weight.zero_()  # level 1 adds nothing: only the transitions remain
        m.blocks[1].mlp.c_proj.weight.zero_()
        w0 = torch.randn(C, 5, generator=g, dtype=torch.float64) @ torch.randn(5, C, generator=g, dtype=torch.float64)
        m.trans[0].weight.copy_(w0)
        P = torch.eye(C, dtype=torch.float64) - 1.0 / C
        q = ex.image_basis(P @ w0 @ P)
        assert q.shape == (C, 5)
        m.trans[1].weight.copy_(
            torch.randn(C, C, generator=g, dtype=torch.float64) @ (torch.eye(C, dtype=torch.float64) - q @ q.T)
        )
    d0, d1 = m.transition_maps()
    assert ex.numerical_rank(d1, 1e-8) == 10 and d1.norm() > 1.0  # not the trivial d_1 = 0
    assert exactness_penalty([d0, d1]).item() < 1e-28  # float64: a squared ratio of round-off (~1e-16)^2
    assert m.exactness().item() < 1e-12  # approximate: evaluated in float32, (~1e-7)^2
    seen = {}
    m.blocks[2].register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    m(torch.randint(0, 13, (2, 16)))
    assert seen["x"].abs().max().item() < 1e-12  # entries would be O(1-10) for a non-exact pair
    with torch.no_grad():
        m.trans[1].weight.add_(0.1 * torch.randn(C, C, generator=g, dtype=torch.float64))
    assert m.exactness().item() > 1e-4


def test_sheaf_laplacian_global_sections():
    path = [(0, 1), (1, 2), (2, 3)]
    eye = torch.eye(2, dtype=torch.float64).expand(3, 2, 2, 2)
    lap = ex.sheaf_laplacian(4, path, eye)  # constant sheaf R^2 on a connected path: H^0 = R^2
    # by hand: the path graph's Laplacian (degrees 1, 2, 2, 1) times I_2, exactly (integer arithmetic)
    graph = torch.tensor([[1.0, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1], [0, 0, -1, 1]], dtype=torch.float64)
    assert torch.equal(lap, torch.kron(graph, torch.eye(2, dtype=torch.float64)))
    assert torch.linalg.eigvalsh(lap)[0] > -1e-12
    assert ex.cohomology_dims([ex.sheaf_coboundary(4, path, eye)])[0] == 2
    two_parts = [(0, 1), (2, 3)]  # two components: H^0 = R^2 + R^2
    assert ex.cohomology_dims([ex.sheaf_coboundary(4, two_parts, eye[:2])])[0] == 4
    cycle = [(0, 1), (1, 2), (2, 0)]
    maps = torch.ones(3, 2, 1, 1, dtype=torch.float64)
    assert ex.cohomology_dims([ex.sheaf_coboundary(3, cycle, maps)])[0] == 1  # constant: one section
    maps[2, 1] = -1.0  # a sign twist around the cycle (Moebius band): no global section
    assert ex.cohomology_dims([ex.sheaf_coboundary(3, cycle, maps)])[0] == 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, generator=g, dtype=torch.float64)  # delta x = 0 on a section of the constant sheaf
    const = ex.sheaf_coboundary(3, cycle, torch.ones(3, 2, 1, 1, dtype=torch.float64))
    assert (const @ torch.full((3,), 2.0, dtype=torch.float64)).abs().max() == 0
    assert x @ ex.sheaf_laplacian(3, cycle, maps) @ x > 0


def test_exact_by_construction():
    torch.manual_seed(0)
    m = LevelGPT(level_cfg(exact=True, rank=5, window=3, k=2)).double()
    d0, d1 = (w.detach() for w in m.transition_maps())
    assert (d1 @ d0).abs().max() < 1e-14  # (I - Pi) Pi = 0 up to float64 round-off; entries of d0, d1 are O(1)
    assert exactness_penalty([d0, d1]).item() < 1e-28
    assert ex.numerical_rank(d0, 1e-8) == 5
    # exact on the centred space: ker d1 = im d0 + span(1)
    assert ex.cohomology_dims([d0, d1], rtol=1e-8)[1] == 1
    ones = torch.ones(16, 1, dtype=torch.float64)
    assert ex.subspace_match(torch.cat([d0, ones], 1), d1, rtol=1e-8) == pytest.approx(1.0, rel=0, abs=1e-12)
    assert ex.subspace_match(d0, d1, rtol=1e-8) == pytest.approx(5 / 6, rel=0, abs=1e-12)  # |im| 5 of |ker| 6
    # Pi is the orthogonal projector onto a 5-dim subspace of 1^perp, and d0 maps into it
    pi = m._projector().detach()
    torch.testing.assert_close(pi @ pi, pi, rtol=0, atol=1e-14)
    torch.testing.assert_close(pi @ ones, torch.zeros_like(ones), rtol=0, atol=1e-14)
    torch.testing.assert_close(pi @ d0, d0, rtol=0, atol=1e-14)
    assert torch.trace(pi).item() == pytest.approx(5.0, rel=0, abs=1e-12)
    base = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=3, n_head=2, n_embd=16)).num_params()
    excess, u = matched_excess(16, 3, False, rank=5)
    assert m.num_params() - base == excess and abs(excess) <= u / 2
    with torch.no_grad():  # the forward pass applies exactly these maps: level 1 adds nothing -> 0 at level 2
        m.blocks[1].attn.c_proj.weight.zero_()
        m.blocks[1].mlp.c_proj.weight.zero_()
    seen = {}
    m.blocks[2].register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    m.eval()(torch.randint(0, 13, (2, 16)))
    assert seen["x"].abs().max().item() < 1e-12
    with pytest.raises(GeoformerError, match="exactly 3 levels"):
        C.build_config(
            {"model": {"n_layer": 4}},
            [
                ("model.arch", "levels"),
                ("model.levels.exact", True),
                ("model.levels.kinds", ["local", "topk", "sdpa", "sdpa"]),
            ],
        )


def test_eval_mode_restores_the_flag_also_on_error():
    from geoformer.models import eval_mode

    m = torch.nn.Linear(2, 2)
    with eval_mode(m):
        assert not m.training
    assert m.training
    with pytest.raises(RuntimeError), eval_mode(m):
        raise RuntimeError("boom")
    assert m.training
    m.eval()
    with eval_mode(m):
        pass
    assert not m.training


def test_composite_ratio_is_one_for_random_maps_zero_for_exact_and_cannot_be_gamed():
    from geoformer.diagnostics.exactness import complex_defect, composite_ratio

    g = torch.Generator().manual_seed(0)
    d0, d1 = torch.randn(64, 48, generator=g, dtype=torch.float64), torch.randn(32, 64, generator=g, dtype=torch.float64)
    r = composite_ratio(d0, d1)
    assert 0.8 < r < 1.2  # approximate: only the expectation is 1 for independent maps (E||d1 d0||^2 = ...)
    # scale invariance is an identity: float64 round-off
    assert composite_ratio(d0, 3.0 * d1) == pytest.approx(r, rel=1e-12)
    assert composite_ratio(0.5 * d0, d1) == pytest.approx(r, rel=1e-12)
    by_hand = math.sqrt(64) * (d1 @ d0).norm().item() / (d1.norm().item() * d0.norm().item())
    assert r == pytest.approx(by_hand, rel=1e-12)
    # an exact pair: d1 kills the image of d0 (d0 maps into the first 24 coordinates, d1 reads only the rest)
    e0 = torch.zeros(64, 48, dtype=torch.float64)
    e0[:24] = torch.randn(24, 48, generator=g, dtype=torch.float64)
    e1 = torch.zeros(32, 64, dtype=torch.float64)
    e1[:, 24:] = torch.randn(32, 40, generator=g, dtype=torch.float64)
    assert composite_ratio(e0, e1) == 0.0
    # inflating one direction of d1 that is not in ker(...) games the spectral-norm defect, not the ratio
    u, s, vh = torch.linalg.svd(d1, full_matrices=False)
    s2 = s.clone()
    s2[0] *= 1000
    gamed = u @ torch.diag(s2) @ vh
    assert complex_defect(d0, gamed) < 0.3 * complex_defect(d0, d1)  # the defect falls 4x: gamed
    assert composite_ratio(d0, gamed) > 0.8  # the ratio still says "as related as random maps"

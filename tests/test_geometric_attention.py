"""Geometric attention kinds (hyperbolic, fisher_rao, quantum) and their math (geometry.fisher):
each kind equals its own explicit reference in float64, is causal and batch-independent, stays finite in
float32 on hostile inputs, and trains inside the GPT."""

from __future__ import annotations

import math

import pytest
import torch

from geoformer import attention
from geoformer.attention.quantum import QuantumGeometricAttention
from geoformer.errors import GeoformerError
from geoformer.geometry import fisher
from geoformer.models.gpt import GPT, GPTConfig
from tests.test_tiled import selection_margin

VARIANTS = {
    "hyperbolic": ("hyperbolic", {}),
    "hyperbolic-tangent": ("hyperbolic", {"aggregate": "tangent", "curvature": 0.5}),
    "fisher_rao": ("fisher_rao", {}),
    "fisher_rao-bc": ("fisher_rao", {"path": "bhattacharyya"}),
    "quantum": ("quantum", {}),
    "quantum-features": ("quantum", {"path": "features"}),
    "quantum-tiled": ("quantum", {"tile": 4, "refine": 2}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param




def build(variant, C=24, H=3, T=16, dtype=torch.float64):
    kind, opts = VARIANTS[variant]
    torch.manual_seed(0)
    m = attention.build(kind, C, H, dropout=0.0, bias=True, block_size=T, options=opts).to(dtype)
    return m.eval()


def through_proj(m, y):
    B, H, T, D = y.shape
    return m.c_proj(y.transpose(1, 2).reshape(B, T, H * D))


# ------------------------------------------------------------------------------------------ kinds
@pytest.mark.parametrize("variant", VARIANTS)
def test_equals_own_reference(variant):
    m = build(variant)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    q, k, v = m.split_heads(x)
    torch.testing.assert_close(m(x), through_proj(m, m.naive(q, k, v)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal(variant):
    m = build(variant)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    y = m(x)
    for t in (0, 5, 14):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        torch.testing.assert_close(m(x2)[:, : t + 1], y[:, : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_of_two_equals_two_batches_of_one(variant, dtype):
    m = build(variant, dtype=dtype)
    x = torch.randn(2, 16, 24, dtype=dtype)
    both = m(x)
    torch.testing.assert_close(both[:1], m(x[:1]), rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(both[1:], m(x[1:]), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_matches_float64(variant):
    m64 = build(variant)
    m32 = build(variant, dtype=torch.float32)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(m32(x.float()).double(), m64(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_weights_are_causal_distributions(variant):
    m = build(variant)
    w = m.attention_weights(torch.randn(2, 16, 24, dtype=torch.float64))
    assert w.shape == (2, 3, 16, 16)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 16, dtype=torch.float64))
    assert (w.triu(1) == 0).all() and (w >= 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_stable_in_float32_on_hostile_inputs(variant):
    """No NaN or Inf, forward or backward: zero inputs, huge inputs, and weights that put every point on
    the rim of the ball (hyperbolic) or make the softmax distributions one-hot (fisher_rao)."""
    for scale_x, scale_w in ((0.0, 1.0), (1e4, 1.0), (1.0, 1e3), (1e3, 1e3)):
        m = build(variant, dtype=torch.float32).train()
        with torch.no_grad():
            m.c_attn.weight.mul_(scale_w)
        x = (torch.randn(2, 16, 24) * scale_x).requires_grad_()
        y = m(x)
        assert torch.isfinite(y).all(), (scale_x, scale_w)
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all(), (scale_x, scale_w)
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None), (
            scale_x,
            scale_w,
        )


def test_hyperbolic_agrees_with_geoopt():
    """Against geoopt's Möbius-sum distance and weighted_midpoint: 1e-8, not 1e-12, because geoopt's route
    loses digits for points near the rim (checked against 80-bit arithmetic: ours 7e-13, geoopt 5e-9)."""
    from geoopt.manifolds.stereographic import math as gmath

    m = build("hyperbolic")
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    q, k, v = m.split_heads(x)
    kk = -m.curvature().double()
    kk5 = kk.unsqueeze(-1)
    xq, xk = gmath.expmap0(q, k=kk), gmath.expmap0(k, k=kk)
    d = gmath.dist(xq.unsqueeze(-2), xk.unsqueeze(-3), k=kk5, keepdim=True).squeeze(-1)
    w = torch.softmax(
        (-m._beta().double() * d).masked_fill(torch.ones(16, 16).triu(1).bool(), float("-inf")), -1
    )
    mid = gmath.weighted_midpoint(
        gmath.expmap0(v, k=kk).unsqueeze(-3), w, k=kk5, reducedim=[-2], keepdim=True
    )
    ref = gmath.logmap0(mid.squeeze(-2), k=kk)
    torch.testing.assert_close(m.attend(q, k, v), ref, rtol=1e-8, atol=1e-8)


def test_hyperbolic_curvature_is_learned_per_head():
    m = build("hyperbolic", dtype=torch.float32).train()
    m(torch.randn(2, 16, 24)).square().sum().backward()
    assert m.log_c.grad is not None and m.log_c.grad.shape == (3,) and (m.log_c.grad != 0).all()
    assert m.log_beta.grad is not None and (m.log_beta.grad != 0).all()
    assert (m.curvature() > 0).all()
    fixed = attention.build("hyperbolic", 24, 3, options={"learn_curvature": False})
    assert not fixed.log_c.requires_grad


def test_hyperbolic_near_zero_curvature_is_euclidean_like():
    """As c -> 0 the ball flattens: d_c(x, y) -> 2|x - y| and the midpoint -> the weighted mean."""
    m = attention.build("hyperbolic", 24, 3, options={"curvature": 1e-3}).double().eval()
    q, k, v = m.split_heads(torch.randn(2, 16, 24, dtype=torch.float64) * 0.1)
    w = torch.softmax(
        (-m._beta().double() * 2 * torch.cdist(q, k)).masked_fill(
            torch.ones(16, 16).triu(1).bool(), float("-inf")
        ),
        -1,
    )
    torch.testing.assert_close(m.attend(q, k, v), w @ v, rtol=1e-3, atol=1e-3)


def test_quantum_paths_agree():
    a, b = build("quantum"), build("quantum-features")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


def test_quantum_tiles_covering_the_sequence_are_dense():
    a = attention.build("quantum", 24, 3, bias=True, options={"tile": 4, "refine": 4}).double().eval()
    b = build("quantum")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


def test_fisher_rao_paths_differ_but_rank_alike():
    """-beta * 2 arccos(BC) and beta * BC order keys the same way, the softmax weights differ."""
    a, b = build("fisher_rao"), build("fisher_rao-bc")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 24, dtype=torch.float64)
    wa, wb = a.attention_weights(x)[..., -1, :], b.attention_weights(x)[..., -1, :]
    assert torch.equal(wa.argsort(-1), wb.argsort(-1))
    assert not torch.allclose(wa, wb, atol=1e-3)


# ------------------------------------------------------------------------------------ demo module
def test_quantum_geometric_attention_demo_api():
    torch.manual_seed(0)
    m = QuantumGeometricAttention(hidden_dim=64, num_heads=4, tile_size=8)
    assert m.get_metrics() == {}
    x = torch.randn(2, 40, 64)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    met = m.get_metrics()
    for key in ("mean_fidelity", "max_fidelity", "attention_entropy", "normalized_entropy", "beta", "path"):
        assert key in met
    assert 0 <= met["mean_fidelity"] <= met["max_fidelity"] <= 1 + 1e-6
    assert 0 <= met["normalized_entropy"] <= 1 + 1e-6 and met["path"] == "tiled"
    assert met["n_tiles"] == 5 and met["refined_tiles"].shape == (2, 4, 5, 4)
    # mean fidelity is the mean of the explicit causal fidelity matrix
    qr, qi, kr, ki = m.states(x)
    f = fisher.fidelity(qr, qi, kr, ki)
    keep = torch.ones(40, 40, dtype=torch.bool).tril()
    assert math.isclose(met["mean_fidelity"], f[..., keep].mean().item(), rel_tol=1e-5)
    dense = QuantumGeometricAttention(hidden_dim=64, num_heads=4, tile_size=0)
    dense.load_state_dict(m.state_dict())
    dense(x)
    assert dense.get_metrics()["path"] == "features" and "n_tiles" not in dense.get_metrics()


def test_quantum_odd_head_width_is_an_error():
    with pytest.raises(GeoformerError, match="even head width"):
        QuantumGeometricAttention(hidden_dim=30, num_heads=2)


# ------------------------------------------------------------------------------------------ math
def test_fidelity_equals_complex_reference(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 7, 2, dtype=dtype, generator=g)
    b = torch.randn(2, 6, 7, 2, dtype=dtype, generator=g)
    ar, ai = fisher.normalize_state(a[..., 0], a[..., 1])
    br, bi = fisher.normalize_state(b[..., 0], b[..., 1])
    psi, phi = torch.complex(ar, ai), torch.complex(br, bi)
    ref = torch.einsum("btk,bsk->bts", psi.conj(), phi).abs().pow(2)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(fisher.fidelity(ar, ai, br, bi), ref, rtol=tol, atol=tol)
    re, im = fisher.overlap(ar, ai, br, bi)
    inner = torch.einsum("btk,bsk->bts", psi.conj(), phi)
    torch.testing.assert_close(torch.complex(re, im), inner, rtol=tol, atol=tol)
    # the density-matrix features: phi(a) . phi(b) = F, n^2 of them, and the mean feature is the mixed state
    fa, fb = fisher.fidelity_features(ar, ai), fisher.fidelity_features(br, bi)
    assert fa.shape[-1] == 49
    torch.testing.assert_close(fa @ fb.transpose(-2, -1), ref, rtol=tol, atol=tol)
    rho = torch.einsum("bsk,bsl->bkl", phi, phi.conj()) / 6  # mixed state of b
    mixed = torch.einsum("btk,bkl,btl->bt", psi.conj(), rho, psi).real
    torch.testing.assert_close(
        fa @ fb.mean(-2, keepdim=True).transpose(-2, -1), mixed.unsqueeze(-1), rtol=tol, atol=tol
    )


def test_fidelity_invariant_under_global_phase_and_self_fidelity_one(dtype):
    g = torch.Generator().manual_seed(1)
    re, im = fisher.normalize_state(
        torch.randn(4, 5, dtype=dtype, generator=g), torch.randn(4, 5, dtype=dtype, generator=g)
    )
    t = 0.7
    re2, im2 = math.cos(t) * re - math.sin(t) * im, math.sin(t) * re + math.cos(t) * im  # e^{it} psi
    f = fisher.fidelity(re, im, re2, im2)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(f.diagonal(), torch.ones(4, dtype=dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(f, fisher.fidelity(re, im, re, im), rtol=tol, atol=tol)
    z = fisher.normalize_state(torch.zeros(3, dtype=dtype), torch.zeros(3, dtype=dtype))
    assert all(torch.isfinite(t).all() for t in z)


def test_fisher_rao_distance(dtype):
    g = torch.Generator().manual_seed(0)
    lp, lq = torch.randn(8, 6, dtype=dtype, generator=g), torch.randn(9, 6, dtype=dtype, generator=g)
    sp, sq = fisher.sqrt_categorical(lp), fisher.sqrt_categorical(lq)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    bc = (torch.softmax(lp, -1)[:, None] * torch.softmax(lq, -1)[None]).sqrt().sum(-1)
    torch.testing.assert_close(fisher.bhattacharyya(sp, sq), bc, rtol=tol, atol=tol)
    d = fisher.pairwise_fisher_rao(sp, sq)
    torch.testing.assert_close(d, 2 * torch.arccos(bc.clamp(max=1)), rtol=tol, atol=tol)
    torch.testing.assert_close(fisher.fisher_rao(sp[:, None], sq[None]), d, rtol=tol, atol=tol)
    dd = fisher.pairwise_fisher_rao(sp, sp)
    assert torch.equal(dd.diagonal(), torch.zeros(8, dtype=dtype))
    torch.testing.assert_close(dd, dd.T, rtol=tol, atol=tol)
    assert (d >= 0).all() and (d <= math.pi + tol).all()
    # disjoint supports are pi apart
    onehot = torch.eye(6, dtype=dtype)
    torch.testing.assert_close(
        fisher.pairwise_fisher_rao(onehot[:1], onehot[1:2]), torch.full((1, 1), math.pi, dtype=dtype)
    )


def test_fisher_rao_is_the_fisher_metric_distance():
    """d_FR(p, p + e u)^2 / e^2 -> g_p(u, u) = sum u^2 / p for tangent u (sum u = 0)."""
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(5, 7, dtype=torch.float64, generator=g), -1)
    u = torch.randn(5, 7, dtype=torch.float64, generator=g)
    u = u - u.mean(-1, keepdim=True)
    for eps in (1e-3, 1e-4):
        d = fisher.fisher_rao(p.sqrt(), (p + eps * u).sqrt())
        torch.testing.assert_close(d.pow(2) / eps**2, fisher.fisher_metric(p, u, u), rtol=20 * eps, atol=0)


def test_fisher_rao_gradient_finite_at_identical_distributions():
    sp = fisher.sqrt_categorical(torch.randn(4, 5, dtype=torch.float64)).requires_grad_()
    fisher.pairwise_fisher_rao(sp, sp).sum().backward()
    assert torch.isfinite(sp.grad).all()


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "kind,opts,match",
    [
        ("hyperbolic", {"curvature": 0.0}, "curvature must be > 0"),
        ("hyperbolic", {"beta": -1.0}, "beta must be > 0"),
        ("hyperbolic", {"aggregate": "mean"}, "aggregate must be one of midpoint, tangent"),
        ("fisher_rao", {"path": "sdpa"}, "path must be one of distance, bhattacharyya"),
        ("fisher_rao", {"beta": 0}, "beta must be > 0"),
        ("quantum", {"path": "loops"}, "path must be one of matmul, features"),
        ("quantum", {"tile": -1}, "tile must be >= 0"),
        ("quantum", {"beta": "hot"}, "beta must be float"),
    ],
)
def test_bad_options_are_clear_errors(kind, opts, match):
    with pytest.raises(GeoformerError, match=match):
        attention.build(kind, 24, 3, options=opts)


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize(
    "kind,opts",
    [
        ("hyperbolic", {}),
        ("fisher_rao", {}),
        ("quantum", {}),
        ("quantum", {"tile": 4, "refine": 2}),
        ("tiled", {"tile": 4}),
    ],
    ids=["hyperbolic", "fisher_rao", "quantum", "quantum-tiled", "tiled"],
)
def test_trains_inside_gpt_without_nan(kind, opts):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, attention=kind, attn=opts)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    idx = torch.randint(0, 11, (4, 16))
    losses = []
    for _ in range(8):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------------------ gradients
def gradcheck_module(m, x, **kw):
    """``torch.autograd.gradcheck`` of ``x, *params -> m(x)`` (float64, central differences): the analytic
    gradients w.r.t. the input and every trainable weight (through ``torch.func.functional_call``)."""
    params = {k: p.detach().clone().requires_grad_() for k, p in m.named_parameters() if p.requires_grad}
    names_ = list(params)
    assert {"c_attn.weight", "c_proj.weight"} <= set(names_)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names_, ps, strict=True)), (x,))

    return torch.autograd.gradcheck(f, (x.requires_grad_(), *params.values()), eps=1e-6, atol=1e-7, rtol=1e-5, **kw)


GRAD_VARIANTS = ["hyperbolic", "hyperbolic-tangent", "fisher_rao", "fisher_rao-bc", "quantum", "quantum-features"]


@pytest.mark.parametrize("variant", GRAD_VARIANTS)
def test_gradcheck_input_and_weights(variant):
    """Small sizes (C = 8, H = 2, T = 6) so the full Jacobian check takes a few seconds at most. Away from the
    non-differentiable points: hyperbolic points stay well inside the ball (no projection to the rim is active),
    Fisher-Rao distances are not 0 (cdist), the quantum states are not 0 (normalisation); none has a top-k."""
    kind, opts = VARIANTS[variant]
    torch.manual_seed(0)
    m = attention.build(kind, 8, 2, dropout=0.0, bias=True, block_size=6, options=opts).double().eval()
    x = 0.5 * torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q, k, v = m.split_heads(x)
    if kind == "hyperbolic":
        sc = m.curvature().sqrt().double()
        radius = torch.cat([torch.tanh(sc.unsqueeze(-1) * t.norm(dim=-1, keepdim=True)) for t in (q, k, v)], -2)
        assert radius.max() < 0.99  # sqrt(c)|x| < 0.99: the projection acts only above 1 - 1e-5
    if kind == "fisher_rao":
        sp, sr = fisher.sqrt_categorical(q), fisher.sqrt_categorical(k)
        d = torch.cdist(sp, sr)
        assert d.min() > 1e-3  # cdist's kink is at 0 (asin's argument is at most sqrt(2) / 2: smooth)
    if kind == "quantum":
        assert q.norm(dim=-1).min() > 0.1 and k.norm(dim=-1).min() > 0.1
    assert gradcheck_module(m, x)


def test_gradcheck_quantum_tiled():
    """tile = 2, refine = 2 at T = 8: query tiles 2 and 3 choose 1 of 2 or 3 past tiles. The choice (a top-k on
    the tile scores) is piecewise constant; the check is valid where no perturbation can change it, so the gap
    between the chosen and the best rejected tile score must be far above what eps = 1e-6 can move."""
    torch.manual_seed(0)
    opts = {"tile": 2, "refine": 2}
    m = attention.build("quantum", 8, 2, dropout=0.0, bias=True, block_size=8, options=opts).double().eval()
    x = torch.randn(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q, k, _ = m.split_heads(x)
    fq = fisher.fidelity_features(*m._states(q)) * m._beta(q.dtype)
    fk = fisher.fidelity_features(*m._states(k))
    assert selection_margin(fq, fk, tile=2, refine=2, scale=1.0) > 1e-3
    assert gradcheck_module(m, x)

"""``gauge_kl`` attention: the fused SDPA path against the explicit pairwise KL, gauge invariance, the
attention contract (causal, batch-independent, rows sum to 1), gradients, training, options and the preset.

All math checks in float64. :func:`assert_gauge_invariant` states the symmetry once and is reused.
"""

from __future__ import annotations

import math

import pytest
import torch

from geoformer import attention
from geoformer.attention import gauge_kl as GK
from geoformer.errors import GeoformerError
from geoformer.geometry import gaussian, so3

F64 = dict(dtype=torch.float64)




def close(a, b, tol=1e-10, rtol=0.0):
    torch.testing.assert_close(a, b, rtol=rtol, atol=tol)


# ------------------------------------------------------------------------------------------ helpers
def beliefs(B=2, H=3, T=7, l=2, *, cov="diag", shared=False, seed=0, spread=1.0):
    """Random beliefs (mu, sigma, phi): sigma = variances (diag) or Cholesky factors (full); phi (B, H|1, T, 3)."""
    g = torch.Generator().manual_seed(seed)
    K = 2 * l + 1
    mu = spread * torch.randn(B, H, T, K, generator=g, **F64)
    if cov == "diag":
        sigma = gaussian.positive_variance(torch.randn(B, H, T, K, generator=g, **F64))
    else:
        sigma = gaussian.cholesky_factor(0.7 * torch.randn(B, H, T, K * (K + 1) // 2, generator=g, **F64), K)
    phi = 1.5 * torch.randn(B, 1 if shared else H, T, 3, generator=g, **F64)
    return mu, sigma, phi


def as_cholesky(sigma, diag):
    return torch.diag_embed(sigma.sqrt()) if diag else sigma


def act(g, l, mu, L, phi, mode):
    """A global gauge transformation g: mu -> rho mu, Sigma -> rho Sigma rho^T, frames by conjugation or left
    multiplication. Returns the new (mu, Cholesky factor of the new Sigma, phi)."""
    rho = so3.exp_map(g, l)
    cov = rho @ L @ L.transpose(-1, -2) @ rho.T
    L2 = torch.linalg.cholesky(0.5 * (cov + cov.transpose(-1, -2)))
    if mode == "conj":  # exp(phi) -> rho exp(phi) rho^T
        phi2 = (so3.adjoint(g) @ phi.unsqueeze(-1)).squeeze(-1)
    else:  # exp(phi) -> rho exp(phi)
        phi2 = so3.compose(g.expand_as(phi), phi)
    return (rho @ mu.unsqueeze(-1)).squeeze(-1), L2, phi2


def assert_gauge_invariant(fn, mu, L, phi, l, *, g, mode="conj", covariant_output=False, tol=1e-9):
    """``fn(mu, L, phi)`` is unchanged by a global gauge transformation ``g`` (see :func:`act`); with
    ``covariant_output`` its output (..., K) must instead rotate as ``rho out``."""
    out = fn(mu, L, phi)
    out2 = fn(*act(g, l, mu, L, phi, mode))
    expected = (so3.exp_map(g, l) @ out.unsqueeze(-1)).squeeze(-1) if covariant_output else out
    close(out2, expected, tol)


def weights_fn(l, causal=True, kappa=0.7):
    return lambda mu, L, phi: GK.gauge_kl_weights(
        mu, L, so3.exp_map(phi, l), inv_temp=1 / kappa, diag=False, causal=causal
    )


def output_fn(l, kappa=0.7):
    return lambda mu, L, phi: GK.gauge_kl_attention(
        mu, L, so3.exp_map(phi, l), inv_temp=1 / kappa, diag=False
    )


def build(C=24, H=3, T=16, dtype=torch.float64, **opts):
    torch.manual_seed(0)
    m = attention.build("gauge_kl", C, H, dropout=0.0, bias=True, block_size=T, options=opts).to(dtype)
    with torch.no_grad():  # spread the beliefs so attention is far from uniform
        for p in m.parameters():
            p.mul_(3.0)
    return m.eval()


SMALL = [["l0", 2, 1], ["l1", 2, 3], ["l2", 1, 5]]


# ------------------------------------------------------------------------------------------ the kernel
@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_fused_equals_pairwise(cov, causal, shared):
    for l in (0, 1, 2, 3):
        mu, sigma, phi = beliefs(l=l, cov=cov, shared=shared, seed=l)
        R = so3.exp_map(phi, l)
        inv_temp = torch.tensor([0.5, 1.0, 2.0], **F64).view(3, 1, 1)
        diag = cov == "diag"
        kw = dict(inv_temp=inv_temp, diag=diag, causal=causal)
        close(
            GK.kl_matrix(mu, sigma, R, diag=diag), GK.kl_matrix_pairwise(mu, sigma, R, diag=diag), rtol=1e-12
        )
        close(GK.gauge_kl_weights(mu, sigma, R, **kw), GK.gauge_kl_weights(mu, sigma, R, pairwise=True, **kw))
        close(GK.gauge_kl_attention(mu, sigma, R, **kw), GK.gauge_kl_attention_pairwise(mu, sigma, R, **kw))


def test_augmented_vectors_give_twice_the_kl():
    mu, sigma, phi = beliefs(l=2, cov="full", seed=3)
    R = so3.exp_map(phi, 2)
    q, k = GK.augmented_qk(mu, sigma, R, diag=False)
    assert q.shape[-1] == k.shape[-1] == 15 + 5 + 1 and q.is_contiguous() and k.is_contiguous()
    kl = GK.kl_matrix_pairwise(mu, sigma, R, diag=False)
    logdet_i = gaussian.logdet_from_cholesky(sigma).unsqueeze(-1)
    close(q @ k.transpose(-1, -2), 2 * kl + 5 + logdet_i, rtol=1e-12)  # entries ~1e3


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_kl_zero_on_diagonal_and_nonnegative(cov):
    mu, sigma, phi = beliefs(l=2, cov=cov, T=9, seed=4)
    kl = GK.kl_matrix_pairwise(mu, sigma, so3.exp_map(phi, 2), diag=cov == "diag")
    close(kl.diagonal(dim1=-2, dim2=-1), torch.zeros(2, 3, 9, **F64), 1e-12)  # Omega_ii = I
    assert (kl >= -1e-12).all()


@pytest.mark.parametrize("l", [1, 2, 3])
@pytest.mark.parametrize("mode", ["conj", "left"])
def test_global_gauge_invariance(l, mode):
    mu, sigma, phi = beliefs(l=l, cov="full", seed=5)
    g = torch.tensor([0.3, -1.1, 0.7], **F64)
    assert_gauge_invariant(weights_fn(l), mu, sigma, phi, l, g=g, mode=mode)
    assert_gauge_invariant(weights_fn(l, causal=False), mu, sigma, phi, l, g=g, mode=mode)
    assert_gauge_invariant(
        lambda m, L, p: GK.kl_matrix_pairwise(m, L, so3.exp_map(p, l), diag=False),
        mu,
        sigma,
        phi,
        l,
        g=g,
        mode=mode,
    )
    assert_gauge_invariant(output_fn(l), mu, sigma, phi, l, g=g, mode=mode, covariant_output=True)


def test_gauge_invariance_of_diagonal_beliefs():
    """Diagonal beliefs are not closed under rotation (rho Sigma rho^T is full): the full path takes them over."""
    mu, var, phi = beliefs(l=2, cov="diag", seed=6)
    R = so3.exp_map(phi, 2)
    w_diag = GK.gauge_kl_weights(mu, var, R, inv_temp=1.0, diag=True)
    close(weights_fn(2, kappa=1.0)(mu, as_cholesky(var, True), phi), w_diag)
    assert_gauge_invariant(
        weights_fn(2), mu, as_cholesky(var, True), phi, 2, g=torch.tensor([1.0, 2.0, -0.5], **F64)
    )


def test_gauge_invariance_fails_for_a_non_gauge_change():
    """The helper is not vacuous: rotating the beliefs but not the frames changes the weights."""
    mu, sigma, phi = beliefs(l=2, cov="full", seed=7)
    rho = so3.exp_map(torch.tensor([0.3, -1.1, 0.7], **F64), 2)
    fn = weights_fn(2)
    with pytest.raises(AssertionError):
        close(fn((rho @ mu.unsqueeze(-1)).squeeze(-1), rho @ sigma, phi), fn(mu, sigma, phi), 1e-6)


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_identical_beliefs_give_uniform_rows(cov):
    mu, sigma, phi = beliefs(B=1, H=2, T=6, l=2, cov=cov, seed=8)
    mu, sigma, phi = (t[:, :, :1].expand_as(t).contiguous() for t in (mu, sigma, phi))
    R = so3.exp_map(phi, 2)
    for pairwise in (False, True):
        w = GK.gauge_kl_weights(mu, sigma, R, inv_temp=50.0, diag=cov == "diag", pairwise=pairwise)
        expected = torch.ones(6, 6, **F64).tril() / torch.arange(1, 7, **F64)[:, None]
        close(w, expected.expand_as(w), 1e-12)
    out = GK.gauge_kl_attention(mu, sigma, R, inv_temp=50.0, diag=cov == "diag")
    close(out, mu, 1e-12)  # every transported mean is mu itself


def test_rows_sum_to_one_and_are_causal():
    mu, sigma, phi = beliefs(l=1, T=10, seed=9, spread=5.0)
    w = GK.gauge_kl_weights(mu, sigma, so3.exp_map(phi, 1), inv_temp=3.0, diag=True)
    close(w.sum(-1), torch.ones(w.shape[:-1], **F64), 1e-12)
    assert (w.triu(1) == 0).all()


# ------------------------------------------------------------------------------------------ the module
@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("frame", ["token", "head"])
def test_module_fused_equals_pairwise(cov, frame):
    m = build(cov=cov, frame=frame, kappa=0.3)
    x = torch.randn(2, 16, 24, **F64)
    y = m(x)
    w = m.attention_weights(x)
    close(y, m.reference(x))
    m.opts.fused = False
    close(y, m(x))
    close(w, m.attention_weights(x))
    assert w.shape == (2, 9, 16, 16) and w[:, :, 1:].std() > 0.05  # not trivially uniform


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_checkpoint_with_separate_input_maps_loads(cov):
    """Runs saved before the mean, covariance and frame maps became one ``c_in`` (c_mu, c_cov, c_phi) load
    into it: the same layer, the same outputs."""
    m = build(cov=cov, frame="head", kappa=0.3)
    sd = m.state_dict()
    w_mu, w_cov, w_phi = sd.pop("c_in.weight").split(m._in_sizes, 0)
    b_mu, b_cov, b_phi = sd.pop("c_in.bias").split(m._in_sizes, 0)
    old = {**sd, "c_mu.weight": w_mu, "c_cov.weight": w_cov, "c_phi.weight": w_phi,
           "c_mu.bias": b_mu, "c_cov.bias": b_cov, "c_phi.bias": b_phi}  # fmt: skip
    fresh = build(cov=cov, frame="head", kappa=0.3)
    with torch.no_grad():
        fresh.c_in.weight.zero_()  # so only the load can make it equal
    fresh.load_state_dict(old)
    x = torch.randn(2, 8, 24, **F64)
    assert torch.equal(fresh(x), m(x))


def test_defaults_build_with_generic_test_sizes():
    m = attention.build("gauge_kl", 24, 3, dropout=0.0, bias=True, block_size=16)
    assert m.n_head == 9 and m.width == 19  # heads from irrep_spec; n_head=3 is ignored
    assert m.head_labels() == ["l0"] * 5 + ["l1"] * 3 + ["l2"]
    assert m(torch.randn(2, 16, 24)).shape == (2, 16, 24)
    assert m.attention_weights(torch.randn(2, 16, 24)).shape == (2, 9, 16, 16)


def test_heads_grouped_by_irrep_type():
    m = build(irrep_spec=[["a", 1, 3], ["b", 2, 5], ["c", 1, 3]])
    assert [(g.l, g.n_heads) for g in m.groups] == [(1, 2), (2, 2)]
    assert m.head_labels() == ["a", "c", "b", "b"]
    assert GK.augmented_head_dims([["l0", 5, 1], ["l1", 3, 3], ["l2", 1, 5]]) == [
        (5, 3, 1),
        (3, 10, 3),
        (1, 21, 5),
    ]


@pytest.mark.parametrize("opts", [{}, {"cov": "full", "frame": "head"}])
def test_module_causal(opts):
    m = build(**opts)
    x = torch.randn(2, 16, 24, **F64)
    y = m(x)
    for t in (0, 7, 14):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        close(m(x2)[:, : t + 1], y[:, : t + 1], 1e-12)


def test_module_batch_rows_independent():
    m = build(cov="full")
    x = torch.randn(2, 16, 24, **F64)
    both = m(x)
    close(both[:1], m(x[:1]), 1e-12)
    close(both[1:], m(x[1:]), 1e-12)


@pytest.mark.parametrize("opts", [{"cov": "diag", "learn_kappa": True}, {"cov": "full", "frame": "head"}])
def test_module_gradcheck(opts):
    torch.manual_seed(0)
    m = attention.build(
        "gauge_kl", 6, 1, bias=True, block_size=4, options={"irrep_spec": SMALL, **opts}
    ).double()
    x = torch.randn(2, 4, 6, **F64, requires_grad=True)
    params = tuple(m.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: m(x), (x, *params), fast_mode=True)


def test_scale_sqrt_d_and_kappa():
    spec = [["l2", 2, 5]]
    x = torch.randn(1, 8, 24, **F64)
    a = build(irrep_spec=spec, kappa=0.5, scale_sqrt_d=True)
    b = build(irrep_spec=spec, kappa=0.5 * math.sqrt(5))
    close(a.attention_weights(x), b.attention_weights(x), 1e-10)
    learn = build(irrep_spec=spec, learn_kappa=True)
    assert isinstance(learn.log_kappa, torch.nn.Parameter) and "log_kappa" in dict(learn.named_parameters())
    learn(x).sum().backward()
    assert learn.log_kappa.grad.abs().sum() > 0
    fixed = build(irrep_spec=spec)
    assert "log_kappa" not in dict(fixed.named_parameters()) and "log_kappa" in fixed.state_dict()


def test_dropout_only_in_training():
    m = attention.build("gauge_kl", 24, 3, dropout=0.5, block_size=16).double()
    x = torch.randn(2, 16, 24, **F64)
    m.eval()
    close(m(x), m(x), 0)
    m.train()
    assert torch.isfinite(m(x)).all()


def test_trains_inside_gpt_without_nan():
    from geoformer.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32, attention="gauge_kl",
                    attn={"irrep_spec": SMALL, "kappa": 0.05, "cov": "full"})  # fmt: skip
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = torch.randint(0, 20, (4, 16)), torch.randint(0, 20, (4, 16))
    losses = []
    for _ in range(12):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "spec, match",
    [
        ([], "non-empty list"),
        ([["l0", 1]], r"\[name, n_heads, dim\]"),
        ([["l1", 2, 4]], "dim must be odd"),
        ([["l1", 0, 3]], "n_heads must be a positive int"),
        ([["l1", True, 3]], "n_heads must be a positive int"),
        ([["", 1, 3]], "non-empty string"),
        ([["x", 1, 3], ["x", 1, 5]], "used for dims 3 and 5"),
    ],
)
def test_malformed_irrep_spec(spec, match):
    with pytest.raises(GeoformerError, match=match):
        attention.build("gauge_kl", 24, 3, options={"irrep_spec": spec})


def test_bad_options():
    with pytest.raises(GeoformerError, match="kappa must be a positive"):
        attention.build("gauge_kl", 24, 3, options={"kappa": 0.0})
    with pytest.raises(GeoformerError, match="cov must be 'diag' or 'full'"):
        attention.build("gauge_kl", 24, 3, options={"cov": "dense"})
    with pytest.raises(GeoformerError, match="frame must be 'token' or 'head'"):
        attention.build("gauge_kl", 24, 3, options={"frame": "pair"})
    with pytest.raises(GeoformerError, match="known keys: .*irrep_spec"):
        attention.build("gauge_kl", 24, 3, options={"irreps": []})
    with pytest.raises(GeoformerError, match="irrep_spec must be"):
        attention.build("gauge_kl", 24, 3, options={"irrep_spec": "l0"})


# ------------------------------------------------------------------------------------------ bench, preset, claims
def test_sdpa_reference_runs():
    run = GK.gauge_kl_sdpa_reference(2, 8, [["l0", 2, 1], ["l2", 1, 5]])
    run()
    run()  # repeatable (grads reset)
    build(irrep_spec=SMALL).sdpa_floor(2, 8)()


def test_preset_plans_and_matches_parameters():
    from geoformer import config as C
    from geoformer.claims import seed001
    from geoformer.experiments.compare import plan
    from geoformer.models.gpt import GPT

    raw = C.load_raw("gauge_kl")
    baseline, seeds, configs, spec = plan(raw, [], None, None)
    assert baseline == "sdpa" and len(seeds) == 3
    gauge = {"gauge_seed", "gauge_l2", "gauge_l3", "kappa_0p0086", "kappa_0p00043", "gauge_l9"}
    controls = {"ctrl_none", "ctrl_uniform", "ctrl_self"}
    assert set(configs) == {"sdpa", "sdpa_matched", "sdpa_modern", "gauge_third", "sdpa_third"} | gauge | controls
    assert "attn_stats" in configs["gauge_seed"][0].train.callbacks
    counts = {}
    for name, cfgs in configs.items():
        mcfg = cfgs[0].model
        mcfg.vocab_size = 65
        counts[name] = GPT(mcfg).num_params()
    assert len({counts[k] for k in gauge}) == 1  # the width-19 gauge variants are matched exactly
    assert abs(counts["sdpa_matched"] / counts["gauge_seed"] - 1) < 0.01  # the narrow sdpa baseline within 1%
    assert 0.30 < counts["gauge_third"] / counts["sdpa"] < 0.36  # "about a third of the parameters"
    plan(raw, seed001.QUICK_SETS, None, 2)  # the quick settings are valid too


def test_claim_rows_are_registered_and_read_head_records():
    from geoformer.claims import all_rows, seed001

    ids = {"001-low-spin-heads-uniform", "001-kappa-table", "001-lower-kappa-same-kl-spread", "001-higher-spin-sharper",
           "001-higher-spin-lower-loss", "001-single-high-irrep-uniform", "001-parameter-efficiency"}  # fmt: skip
    assert ids <= set(all_rows())
    rec = {"row_std/L0.0.l0": 0.02, "row_std/L1.4.l2": 0.08, "row_std/l0": 0.02, "self_weight/L0.0.l0": 0.5, "val_loss": 2.0}
    assert sorted(seed001.head_row_stds(rec)) == [("l0", 0.02), ("l2", 0.08)]
    assert seed001.head_row_stds(rec, "self_weight") == [("l0", 0.5)]
    assert seed001.head_row_stds(None) == []
    run = {"metrics": [{"train_grad_norm_max": 3.0}, {"train_grad_norm_max": 7.0, **rec}]}
    assert seed001.max_grad_norm(run) == 7.0 and seed001.uniform_fraction(run) == 1.0

def test_autocast_keeps_the_kernel_in_float32():
    m = build(T=16, dtype=torch.float32)
    x = torch.randn(2, 16, 24)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)  # only the bf16 projections differ


def test_attention_stats_group_heads_by_irrep():
    from geoformer.diagnostics.attention_stats import attention_stats
    from geoformer.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=12, attention="gauge_kl")
    stats = attention_stats(GPT(cfg), torch.randint(0, 11, (2, 8)))
    assert {"row_std/l0", "row_std/l1", "row_std/l2", "entropy/l2", "row_std/L1.8.l2"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values())


# ------------------------------------------------------------------------------------------ many rotations
N_ROT = 24  # random global rotations per spin


def random_rotations(n, seed):
    """``n`` rotation vectors spread over SO(3): uniform axes, angles uniform in [0, pi)."""
    gen = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=gen, **F64)
    return axis / axis.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=gen, **F64) * math.pi


def gauge_transform_batch(g, l, mu, L, R, mode):
    """All ``N = len(g)`` global transformations at once, stacked on the batch axis (N * B, ...):
    ``mu -> rho mu``, ``Sigma -> rho Sigma rho^T`` (re-factored by Cholesky), ``R -> rho R`` (``"left"``) or
    ``rho R rho^T`` (``"conj"``), ``rho = D^l(g)``. The frames are transformed as matrices (no log map)."""
    rho = so3.exp_map(g, l)
    K = 2 * l + 1
    r = rho.view(len(g), 1, 1, 1, K, K)
    cov = r @ L @ L.mT @ r.mT
    L2 = torch.linalg.cholesky(0.5 * (cov + cov.mT))
    R2 = r @ R if mode == "left" else r @ R @ r.mT
    mu2 = (r @ mu.unsqueeze(-1)).squeeze(-1)
    return mu2.flatten(0, 1), L2.flatten(0, 1), R2.flatten(0, 1), rho


def check_invariance_over_rotations(mu, sigma, R, l, *, diag, inv_temp, seed, tol=1e-10):
    """The kernel's invariance for ``N_ROT`` random ``g`` and both frame actions: the weights (fused and
    pairwise, causal and not) and the KL matrix are unchanged, the head outputs rotate as ``rho m``."""
    L = as_cholesky(sigma, diag)
    N = N_ROT
    g = random_rotations(N, seed)
    kw = dict(inv_temp=inv_temp)
    w = {(c, p): GK.gauge_kl_weights(mu, sigma, R, diag=diag, causal=c, pairwise=p, **kw)
         for c in (True, False) for p in (False, True)}  # fmt: skip
    kl = GK.kl_matrix_pairwise(mu, sigma, R, diag=diag)
    out = GK.gauge_kl_attention(mu, sigma, R, diag=diag, **kw)
    for mode in ("left", "conj"):
        mu2, L2, R2, rho = gauge_transform_batch(g, l, mu, L, R, mode)
        close(rho @ rho.mT, torch.eye(2 * l + 1, **F64).expand_as(rho), 1e-13)  # rho = D^l(g) is orthogonal
        for (c, p), ref in w.items():
            got = GK.gauge_kl_weights(mu2, L2, R2, diag=False, causal=c, pairwise=p, **kw)
            close(got.view(N, *ref.shape), ref.expand(N, *ref.shape), tol)
        for fn in (GK.kl_matrix, GK.kl_matrix_pairwise):  # entries up to ~1e2: relative
            close(fn(mu2, L2, R2, diag=False).view(N, *kl.shape), kl.expand(N, *kl.shape), tol, rtol=tol)
        rho_b = rho.view(N, 1, 1, 1, *rho.shape[-2:])
        out2 = GK.gauge_kl_attention(mu2, L2, R2, diag=False, **kw).view(N, *out.shape)
        close(out2, (rho_b @ out.unsqueeze(-1)).squeeze(-1), tol)
        if l > 0:  # not vacuous: rotating the beliefs but not the frames moves the KL, for every g
            bad = GK.kl_matrix_pairwise(mu2, L2, R.repeat(N, *[1] * (R.dim() - 1)), diag=False)
            moved = (bad.view(N, *kl.shape) - kl).abs().flatten(1).amax(1)
            assert moved.min() > 1e-2, moved.min()
    return w[True, False]


@pytest.mark.parametrize("l", [0, 1, 2, 3])
@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("frame", ["token", "head"])
def test_gauge_invariance_over_many_rotations(l, cov, frame):
    """``frame = "token"``: one frame per token shared by the heads (R of shape (B, 1, T, K, K)); ``"head"``:
    one per head. Diagonal beliefs are compared through the full path (rho Sigma rho^T is not diagonal)."""
    mu, sigma, phi = beliefs(B=2, H=3, T=6, l=l, cov=cov, shared=frame == "token", seed=20 + l, spread=2.0)
    inv_temp = torch.tensor([0.5, 1.0, 2.0], **F64).view(3, 1, 1)
    w = check_invariance_over_rotations(
        mu, sigma, so3.exp_map(phi, l), l, diag=cov == "diag", inv_temp=inv_temp, seed=l
    )
    if l > 0:
        assert w[:, :, 1:].std() > 0.05  # far from uniform: the invariance is not that of a constant


def test_spin_zero_gauge_action_is_trivial():
    """D^0(g) = 1 for every g, so for l = 0 the invariance above holds by construction (checked for the record)."""
    rho = so3.exp_map(random_rotations(N_ROT, 0), 0)
    assert torch.equal(rho, torch.ones(N_ROT, 1, 1, **F64))


@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("frame", ["token", "head"])
def test_module_beliefs_gauge_invariant_over_many_rotations(cov, frame):
    """The module's own beliefs (both ``frame`` settings, spins 0..3): the weights it would compute from them are
    invariant under every one of the ``N_ROT`` global rotations (the linear maps themselves are not equivariant,
    so the symmetry acts on the beliefs, not on x)."""
    spec = [["l0", 1, 1], ["l1", 2, 3], ["l2", 1, 5], ["l3", 1, 7]]
    torch.manual_seed(0)  # default init (build() spreads the beliefs to KLs ~1e6, where Cholesky loses digits)
    options = dict(irrep_spec=spec, cov=cov, frame=frame, kappa=10.0)
    m = attention.build("gauge_kl", 24, 3, dropout=0.0, bias=True, block_size=6, options=options).double()
    x = torch.randn(2, 6, 24, generator=torch.Generator().manual_seed(1), **F64)
    with torch.no_grad():
        groups = m.beliefs(x)
    assert [gr.l for gr in m.groups] == [0, 1, 2, 3]
    for gr, (mu, sigma, R), inv_temp in zip(m.groups, groups, m.inv_temps(), strict=True):
        assert R.size(1) == (1 if frame == "token" else gr.n_heads)
        w = check_invariance_over_rotations(mu, sigma, R, gr.l, diag=m.diag, inv_temp=inv_temp, seed=100 + gr.l)
        if gr.l > 0:
            assert w[:, :, 1:].std() > 0.05  # kappa = 10 against KLs ~10-100: weights far from uniform and one-hot

"""Adaptive tiled attention: exactly dense when every tile is refined, equal to its explicit dense-weight
reference otherwise, causal (also inside a tile), batch-independent, selecting the best-scoring tiles."""

from __future__ import annotations

import math

import pytest
import torch

from geoformer import attention
from geoformer.attention.base import causal_mask, masked_softmax_attention
from geoformer.attention.tiled import tile_selection, tiled_attention, tiled_attention_weights
from geoformer.errors import GeoformerError


def qkv(B=2, H=3, T=37, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, dtype=dtype, generator=g) for _ in range(3))


def dense(q, k, v):
    return masked_softmax_attention(q, k, v, causal_mask(q.size(-2)))


@pytest.mark.parametrize("T,tile", [(37, 4), (32, 8), (16, 16), (5, 8), (20, 1)])
def test_every_tile_refined_is_exactly_dense(T, tile):
    q, k, v = qkv(T=T)
    nT = -(-T // tile)
    for refine in (nT, nT + 3):
        y, info = tiled_attention(q, k, v, tile=tile, refine=refine)
        assert info["refined"].sum(-1).sum(-1).eq(nT * (nT + 1) // 2).all()
        torch.testing.assert_close(y, dense(q, k, v), rtol=1e-12, atol=1e-12)


def test_module_with_every_tile_refined_equals_sdpa_module():
    a = (
        attention.build("tiled", 24, 3, bias=True, block_size=16, options={"tile": 4, "refine": 4})
        .double()
        .eval()
    )
    b = attention.build("sdpa", 24, 3, bias=True, block_size=16).double().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("coarse", [True, False])
@pytest.mark.parametrize("tile,refine", [(4, 1), (4, 2), (5, 3), (3, 2)])
def test_equals_dense_weight_reference(tile, refine, coarse):
    q, k, v = qkv()
    y, info = tiled_attention(q, k, v, tile=tile, refine=refine, coarse=coarse)
    w = tiled_attention_weights(q, k, info, tile=tile, coarse=coarse)
    torch.testing.assert_close(y, w @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]))
    assert (w.triu(1) == 0).all()
    if not coarse:  # block-sparse: plain masked softmax over the refined causal tiles
        tile_of = torch.arange(q.size(-2)) // tile
        mask = info["refined"][..., tile_of[:, None], tile_of[None, :]] & causal_mask(q.size(-2))
        torch.testing.assert_close(y, masked_softmax_attention(q, k, v, mask), rtol=1e-12, atol=1e-12)


def test_selection_is_the_best_scoring_past_tiles():
    """Explicit loop reference: the causal query summary, the mean keys, log tile sizes, top (refine - 1)."""
    q, k, v = qkv(T=35, D=4, seed=3)
    tile, refine = 5, 3
    info = tile_selection(q, k, v, tile=tile, refine=refine, scale=0.5)
    nT = 7
    for b in range(2):
        for h in range(3):
            for i in range(nT):
                lo, hi = max(0, i * tile - tile + 1), i * tile
                qbar = q[b, h, lo : hi + 1].mean(0)
                scores = [
                    0.5 * qbar @ k[b, h, j * tile : (j + 1) * tile].mean(0) + math.log(tile) for j in range(i)
                ]
                best = sorted(range(i), key=lambda j: -scores[j])[: refine - 1]
                expected = sorted([i, *best])
                got = torch.nonzero(info["refined"][b, h, i]).flatten().tolist()
                assert got == expected, (b, h, i)
                for j in range(i):
                    assert math.isclose(info["scores"][b, h, i, j].item(), scores[j].item(), rel_tol=1e-12)


def test_summary_token_is_exact_for_constant_tiles():
    """When keys and values are constant inside every tile, one token with log L_j reproduces the tile."""
    q, _, _ = qkv(T=32)
    k0, v0 = qkv(T=8, seed=1)[1:]
    k, v = k0.repeat_interleave(4, dim=-2), v0.repeat_interleave(4, dim=-2)
    for refine in (1, 2):
        y, _ = tiled_attention(q, k, v, tile=4, refine=refine)
        torch.testing.assert_close(y, dense(q, k, v), rtol=1e-12, atol=1e-12)


def test_partial_last_tile_counts():
    q, k, v = qkv(T=10)
    _, info = tiled_attention(q, k, v, tile=4, refine=1)
    assert info["counts"].tolist() == [4, 4, 2]
    torch.testing.assert_close(info["kbar"][..., 2, :], k[..., 8:, :].mean(-2))


def build(T=16, dtype=torch.float64, **opts):
    torch.manual_seed(0)
    opts = {"tile": 4, "refine": 2, **opts}
    return attention.build("tiled", 24, 3, bias=True, block_size=T, options=opts).to(dtype).eval()


@pytest.mark.parametrize("opts", [{}, {"coarse": False}, {"tile": 3, "refine": 1}, {"tile": 5, "refine": 3}])
def test_module_causal_inside_tiles(opts):
    m = build(**opts)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    y = m(x)
    for t in range(16):  # every position, so also the first, middle and last of a tile
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        torch.testing.assert_close(m(x2)[:, : t + 1], y[:, : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_module_batch_of_two_equals_two_batches_of_one(dtype):
    m = build(dtype=dtype)
    x = torch.randn(2, 16, 24, dtype=dtype)
    both = m(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(both[:1], m(x[:1]), rtol=tol, atol=tol)
    torch.testing.assert_close(both[1:], m(x[1:]), rtol=tol, atol=tol)


def test_module_reference_mask_and_weights():
    m = build()
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    q, k, v = m.split_heads(x)
    torch.testing.assert_close(m.attend(q, k, v), m.naive(q, k, v), rtol=1e-12, atol=1e-12)
    assert m.mask_for(q, k).shape == (2, 3, 16, 16)
    assert torch.equal(
        m.mask_for(q, k), causal_mask(16).expand(2, 3, 16, 16)
    )  # with summaries every past key counts
    w = m.attention_weights(x)
    torch.testing.assert_close(m.attend(q, k, v), w @ v, rtol=1e-12, atol=1e-12)


def test_get_metrics_reports_refined_tiles():
    m = build(T=20, tile=4, refine=3)
    assert m.get_metrics() == {}
    m(torch.randn(2, 20, 24, dtype=torch.float64))
    met = m.get_metrics()
    assert met["n_tiles"] == 5 and met["tile"] == 4 and met["refine"] == 3
    ref = met["refined"]
    assert ref.shape == (2, 3, 5, 5) and ref.diagonal(dim1=-2, dim2=-1).all() and not ref.triu(1).any()
    assert ref.sum(-1)[0, 0].tolist() == [1, 2, 3, 3, 3]
    tiles = met["refined_tiles"]
    assert tiles.shape == (2, 3, 5, 3) and (tiles[..., 0, 1:] == -1).all()
    assert math.isclose(met["refined_fraction"], 12 / 15)
    assert 0 < met["refined_mass"] <= 1


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_backend_matches_gather():
    pytest.importorskip("torch.nn.attention.flex_attention")
    q, k, v = qkv(B=1, H=2, T=21, D=8)
    for coarse in (True, False):
        a, _ = tiled_attention(q, k, v, tile=4, refine=2, coarse=coarse)
        b, _ = tiled_attention(q, k, v, tile=4, refine=2, coarse=coarse, backend="flex")
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(GeoformerError, match="dropout"):
        tiled_attention(q, k, v, tile=4, refine=2, backend="flex", dropout_p=0.1)


def test_gradients_and_dropout_float32():
    m = attention.build("tiled", 24, 3, dropout=0.2, block_size=16, options={"tile": 4, "refine": 2}).train()
    x = torch.randn(2, 16, 24, requires_grad=True)
    m(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"tile": 0}, "tile must be >= 1"),
        ({"refine": 0}, "refine must be >= 1"),
        ({"backend": "cuda"}, "backend must be one of gather, flex"),
        ({"tile": 2.5}, "tile must be int"),
    ],
)
def test_bad_options_are_clear_errors(opts, match):
    with pytest.raises(GeoformerError, match=match):
        attention.build("tiled", 24, 3, options=opts)


def test_custom_score_path_equals_sdpa_path():
    """The explicit-logits branch (used by kernels with their own refined score) agrees with the SDPA branch."""
    q, k, v = qkv(T=29)
    s = 1 / math.sqrt(8)
    for coarse in (True, False):
        a, _ = tiled_attention(q, k, v, tile=4, refine=2, coarse=coarse)
        b, _ = tiled_attention(
            q,
            k,
            v,
            tile=4,
            refine=2,
            coarse=coarse,
            scale=s,
            score=lambda x, y: s * (x @ y.transpose(-2, -1)),
            summary=(q, k),
        )
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="both score and summary"):
        tiled_attention(q, k, v, tile=4, refine=2, summary=(q, k))
    with pytest.raises(GeoformerError, match="gather"):
        tiled_attention(
            q, k, v, tile=4, refine=2, backend="flex", score=lambda x, y: x @ y.mT, summary=(q, k)
        )


# ------------------------------------------------------------------------------------------ gradients
def selection_margin(q, k, *, tile, refine, scale):
    """Smallest gap, over query tiles with more past tiles than refined slots, between the last chosen and the
    best rejected past-tile score: how far the top-k tile choice is from a tie."""
    s = tile_selection(q, k, k, tile=tile, refine=refine, scale=scale)["scores"]
    n_t = s.size(-1)
    gaps = [
        (top[..., refine - 2] - top[..., refine - 1]).min()
        for i in range(refine, n_t)
        for top in [s[..., i, :i].sort(dim=-1, descending=True).values]
    ]
    assert gaps, "no query tile has a choice to make"
    return torch.stack(gaps).min().item()


@pytest.mark.parametrize("coarse", [True, False])
@pytest.mark.parametrize("tile,refine", [(2, 2), (3, 2), (2, 3)])
def test_module_gradcheck_input_and_weights(tile, refine, coarse):
    """Full float64 Jacobian check of ``x, W -> tiled(x)`` w.r.t. the input and every weight (C = 8, H = 2,
    T = 8: about a second each). The tile choice is a top-k of the tile scores, piecewise constant in x: the
    check is only meaningful where no perturbation of size eps = 1e-6 can flip it, so the seed is one whose
    smallest gap between a chosen and a rejected tile score is > 1e-3 (asserted), and the rejected tiles make
    the choice matter (summary tokens with ``coarse``, dropped keys without)."""
    torch.manual_seed(0)
    m = attention.build(
        "tiled", 8, 2, dropout=0.0, bias=True, block_size=8, options={"tile": tile, "refine": refine, "coarse": coarse}
    ).double().eval()
    x = torch.randn(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q, k, _ = m.split_heads(x)
    assert selection_margin(q, k, tile=tile, refine=refine, scale=1 / math.sqrt(4)) > 1e-3
    _, info = tiled_attention(q, k, k, tile=tile, refine=refine)
    n_t = -(-8 // tile)
    assert info["refined"].sum() < 2 * 2 * n_t * (n_t + 1) // 2  # some causal tile pairs are not refined
    params = {n: p.detach().clone().requires_grad_() for n, p in m.named_parameters()}
    names = list(params)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(
        f, (x.requires_grad_(), *params.values()), eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_kernel_gradcheck_q_k_v():
    """The kernel alone, w.r.t. q, k and v (T = 9: a partial last tile), with the same no-tie precondition."""
    q, k, v = qkv(B=1, H=2, T=9, D=4, seed=5)
    assert selection_margin(q, k, tile=2, refine=2, scale=0.5) > 1e-3
    for coarse in (True, False):
        fn = lambda q, k, v, coarse=coarse: tiled_attention(q, k, v, tile=2, refine=2, coarse=coarse)[0]
        assert torch.autograd.gradcheck(
            fn, tuple(t.clone().requires_grad_() for t in (q, k, v)), eps=1e-6, atol=1e-7, rtol=1e-5
        )

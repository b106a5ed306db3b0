"""Every registered attention kind: equal to the explicit reference with its own mask (float64),
causal, batch-independent, and looked up by name with clear errors."""

from __future__ import annotations

import pytest
import torch

from geoformer import attention
from geoformer.attention.base import masked_softmax_attention
from geoformer.errors import GeoformerError

KINDS = attention.names()
OPTS = {"local": {"window": 5}, "topk": {"k": 3}, "tiled": {"tile": 4, "refine": 2}}


def build(kind, C=24, H=3, T=16, dtype=torch.float64):
    torch.manual_seed(0)
    m = attention.build(kind, C, H, dropout=0.0, bias=True, block_size=T, options=OPTS.get(kind)).to(dtype)
    return m.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_equals_naive_with_same_mask(kind):
    """QKV kinds against their explicit reference (``naive``: softmax of their own logits with their own
    mask); kinds with their own parametrisation (gauge_kl) against their explicit pairwise ``reference``."""
    m = build(kind)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    if hasattr(m, "reference"):
        ref = m.reference(x)
    else:
        q, k, v = m.split_heads(x)
        ref = m.c_proj(m.naive(q, k, v).transpose(1, 2).reshape(2, 16, 24))
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


def test_sdpa_equals_naive_kind():
    a, b = build("sdpa"), build("naive")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


def test_sdpa_temperature_scales_logits():
    m = attention.build("sdpa", 24, 3, bias=True, block_size=16, options={"temperature": 0.3}).double().eval()
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    q, k, v = m.split_heads(x)
    ref = masked_softmax_attention(q, k, v, m.mask_for(q, k), scale=1 / (0.3 * 8**0.5))
    torch.testing.assert_close(m(x), m.c_proj(ref.transpose(1, 2).reshape(2, 16, 24)), rtol=1e-12, atol=1e-12)


def test_sdpa_width_narrows_the_heads_and_matches_its_reference():
    m = attention.build("sdpa", 24, 3, bias=False, block_size=16, options={"width": 6}).double().eval()
    assert m.c_attn.weight.shape == (18, 24) and m.c_proj.weight.shape == (24, 6)
    assert sum(p.numel() for p in m.parameters()) == 4 * 24 * 6
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    q, k, v = m.split_heads(x)
    assert q.shape == (2, 3, 16, 2)
    ref = masked_softmax_attention(q, k, v, m.mask_for(q, k))
    torch.testing.assert_close(m(x), m.c_proj(ref.transpose(1, 2).reshape(2, 16, 6)), rtol=1e-12, atol=1e-12)
    with pytest.raises(GeoformerError, match="model.attn.width=7 is not divisible by n_head=3"):
        attention.build("sdpa", 24, 3, block_size=16, options={"width": 7})


def test_local_window_covering_everything_is_full_attention():
    a = attention.build("local", 24, 3, bias=True, block_size=16, options={"window": 16}).double().eval()
    b = build("sdpa")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


def test_topk_keeps_k_keys_per_row():
    m = build("topk")
    q, k, _ = m.split_heads(torch.randn(2, 16, 24, dtype=torch.float64))
    kept = m.mask_for(q, k).sum(-1)
    expected = torch.clamp(torch.arange(1, 17), max=3)
    assert torch.equal(kept, expected.expand_as(kept))
    assert not m.mask_for(q, k).triu(1).any()


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    m = build(kind)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    y = m(x)
    for t in (0, 7, 14):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
        torch.testing.assert_close(m(x2)[:, : t + 1], y[:, : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_rows_independent(kind):
    m = build(kind)
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    both = m(x)
    torch.testing.assert_close(both[:1], m(x[:1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both[1:], m(x[1:]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_float32(kind):
    m = build(kind, dtype=torch.float32).train()
    x = torch.randn(2, 16, 24, requires_grad=True)
    if kind == "none":  # the switched-off control: no parameters, output independent of x
        assert not list(m.parameters()) and not m(x).requires_grad and not m(x).any()
        return
    m(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_kind_lists_known():
    with pytest.raises(GeoformerError, match="known kinds: .*sdpa"):
        attention.get("flash9")


def test_unknown_or_mistyped_option():
    with pytest.raises(GeoformerError, match="known keys: window"):
        attention.build("local", 24, 3, options={"windw": 3})
    with pytest.raises(GeoformerError, match="window must be int"):
        attention.build("local", 24, 3, options={"window": "big"})
    with pytest.raises(GeoformerError, match=">= 1"):
        attention.build("topk", 24, 3, options={"k": 0})


def test_control_kinds_are_what_they_say():
    """uniform = causal mean of v, self_only = v, none = 0; their weights are exactly uniform / identity."""
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    u, s = build("uniform"), build("self_only")
    q, k, v = u.split_heads(x)
    mean = torch.stack([v[:, :, : i + 1].mean(-2) for i in range(16)], dim=-2)
    torch.testing.assert_close(u.attend(q, k, v), mean, rtol=1e-12, atol=1e-12)
    w = u.attention_weights(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 16, dtype=torch.float64))
    assert torch.equal(w[0, 0, 5, :6], torch.full((6,), 1 / 6, dtype=torch.float64)) and not w.triu(1).any()
    q, k, v = s.split_heads(x)
    assert torch.equal(s.attend(q, k, v), v)
    assert torch.equal(s.attention_weights(x)[1, 2], torch.eye(16, dtype=torch.float64))
    assert not build("none")(x).any()

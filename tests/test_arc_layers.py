"""Equivariant layers: exact D4 equivariance (float32, 1e-5) on odd/even, square/non-square and padded
grids; kernels rebuilt after every optimizer step (the pointer-keyed cache bug)."""

from __future__ import annotations

import pytest
import torch

from geoformer.geometry import d4
from geoformer.models.d4_layers import (
    D4Encoder,
    GridHead,
    GroupConv,
    GroupResBlock,
    LiftingConv,
    MaskedNorm,
    invariant_pool,
    orientation_pool,
)

SHAPES = [(5, 5), (4, 4), (5, 7), (4, 6), (1, 3)]
TOL = 1e-5


def _inputs(shape, c=3, regular=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, *((8,) if regular else ()), *shape, generator=g)
    return x, torch.ones(2, 1, *shape)


def _net(cls, *a, **k):
    torch.manual_seed(0)
    m = cls(*a, **k)
    with torch.no_grad():  # non-trivial affine parameters and biases
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("shape", SHAPES)
def test_lifting_conv_equivariant(shape):
    x, m = _inputs(shape)
    assert d4.equivariance_error(_net(LiftingConv, 3, 4), x, m, rep_out="regular") < TOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dilation", [1, 2])
def test_group_conv_equivariant(shape, dilation):
    f, m = _inputs(shape, regular=True)
    assert (
        d4.equivariance_error(_net(GroupConv, 3, 4, 3, dilation), f, m, rep_in="regular", rep_out="regular")
        < TOL
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_norm_block_pools_and_equivariant_head(shape):
    f, m = _inputs(shape, regular=True)
    for layer in (_net(MaskedNorm, 3), _net(GroupResBlock, 3, 2)):
        assert d4.equivariance_error(layer, f, m, rep_in="regular", rep_out="regular") < TOL
    assert d4.equivariance_error(lambda t, _: orientation_pool(t), f, m, rep_in="regular") < TOL
    assert d4.equivariance_error(invariant_pool, f, m, rep_in="regular", rep_out="invariant") < TOL
    head = _net(GridHead, 3, 10, 8, breaking=False)
    assert d4.equivariance_error(head, f, m, rep_in="regular") < TOL


@pytest.mark.parametrize("shape", SHAPES)
def test_whole_encoder_equivariant(shape):
    x, m = _inputs(shape, c=21)
    enc = _net(D4Encoder, 21, 4, 3, skip=True)
    assert d4.equivariance_error(enc, x, m, rep_out="regular") < TOL
    head = _net(GridHead, 4 + 21, 10, 8, breaking=False)
    assert d4.equivariance_error(lambda t, mm: head(enc(t, mm), mm), x, m) < TOL


def test_breaking_head_is_not_equivariant_once_trained():
    f, m = _inputs((4, 5), regular=True)
    head = _net(GridHead, 3, 10, 8, breaking=True)
    assert d4.equivariance_error(head, f, m, rep_in="regular") > 1e-3


@pytest.mark.parametrize("shape", [(5, 7), (4, 4), (3, 6)])
def test_padding_keeps_each_grid_exact_and_equivariant(shape):
    """A grid padded (bottom/right) into a larger batch gets the values it gets alone, so equivariance
    holds for padded non-square grids too, and padding content never reaches valid pixels."""
    enc = _net(D4Encoder, 21, 4, 3)
    x, m = _inputs(shape, c=21)
    x, m = x[:1] * m[:1], m[:1]
    alone = enc(x, m)
    H, W = 9, 8
    for g in range(8):
        xg, mg = d4.act(x, g), d4.act(m, g)
        h, w = xg.shape[-2:]
        xp, mp = torch.randn(2, 21, H, W), torch.zeros(2, 1, H, W)  # garbage in the padding
        mp[1] = 1.0
        xp[0, :, :h, :w], mp[0, :, :h, :w] = xg[0], mg[0]
        out = enc(xp, mp)
        torch.testing.assert_close(out[0, :, :, :h, :w], d4.act_regular(alone, g)[0], atol=TOL, rtol=TOL)
        assert out[0, :, :, h:, :].abs().max() == 0 and out[0, :, :, :, w:].abs().max() == 0


def test_kernels_follow_the_parameters_after_an_optimizer_step():
    """Regression: a kernel cache keyed on the parameter's data pointer froze learning (the pointer
    never changes under in-place optimizer updates). The kernel must be rebuilt on every forward."""
    torch.manual_seed(0)
    for layer, x in (
        (LiftingConv(3, 4), torch.randn(1, 3, 5, 6)),
        (GroupConv(3, 4), torch.randn(1, 3, 8, 5, 6)),
    ):
        m = torch.ones(1, 1, 5, 6)
        ptr = layer.weight.data_ptr()
        y0 = layer(x, m).detach().clone()
        k0 = layer.kernel().detach().clone()
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        layer(x, m).pow(2).sum().backward()
        opt.step()
        assert layer.weight.data_ptr() == ptr  # same storage: a pointer key would not notice
        assert not torch.allclose(layer.kernel(), k0)
        assert not torch.allclose(layer(x, m), y0)
        assert torch.equal(
            layer.kernel().view(4, 8, *layer.kernel().shape[1:])[:, 0].reshape(layer.weight.shape),
            layer.weight.detach(),
        )

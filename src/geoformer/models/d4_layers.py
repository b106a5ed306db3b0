"""D4-equivariant layers on masked, padded grids (plain rot90/flip kernels, no escnn).

Scalar fields are ``(B, C, H, W)``; features in D4's regular representation are ``(B, C, 8, H, W)``
(see :mod:`geoformer.geometry.d4` for the action). Every layer takes a mask ``(B, 1, H, W)`` (1 on a
grid's own pixels, 0 on padding) and zeroes the padding before and after each operation, so the valid pixels of
a grid get exactly the values they would get alone: zero padding is what ``conv2d`` pads with, and
padding placement (bottom/right) then cannot break equivariance on non-square or odd/even grids.

The transformed kernels are built from the parameters at every forward pass. Nothing is cached: a
cache keyed on the parameter's storage serves stale kernels after an in-place optimizer step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer.geometry import d4


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * (mask if x.dim() == 4 else mask.unsqueeze(2))


class LiftingConv(nn.Module):
    """Scalar fields -> regular features: ``out[g] = corr(x, T(g) W)``, so ``lift(g·x) = g·lift(x)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (a centred kernel keeps rotations exact)")
        self.c_out, self.dilation, self.pad = c_out, dilation, dilation * (kernel_size // 2)
        self.weight = nn.Parameter(
            torch.randn(c_out, c_in, kernel_size, kernel_size) / math.sqrt(c_in * kernel_size**2)
        )
        self.bias = nn.Parameter(torch.zeros(c_out))

    def kernel(self) -> torch.Tensor:
        """(C_out * 8, C_in, k, k), rebuilt from ``weight`` on every call."""
        w = torch.stack([d4.act(self.weight, g) for g in range(d4.ORDER)], dim=1)
        return w.reshape(-1, *self.weight.shape[1:])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = self.bias.repeat_interleave(d4.ORDER)
        y = F.conv2d(x * mask, self.kernel(), b, padding=self.pad, dilation=self.dilation)
        return _masked(y.view(x.shape[0], self.c_out, d4.ORDER, *y.shape[-2:]), mask)


class GroupConv(nn.Module):
    """Regular -> regular: ``out[g] = sum_h corr(f[h], T(g) W[g^{-1} h])``, so ``gconv(g·f) = g·gconv(f)``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (a centred kernel keeps rotations exact)")
        self.c_out, self.dilation, self.pad = c_out, dilation, dilation * (kernel_size // 2)
        fan_in = c_in * d4.ORDER * kernel_size**2
        self.weight = nn.Parameter(
            torch.randn(c_out, c_in, d4.ORDER, kernel_size, kernel_size) / math.sqrt(fan_in)
        )
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer(
            "perms", torch.stack([d4.regular_perm(g) for g in range(d4.ORDER)]), persistent=False
        )

    def kernel(self) -> torch.Tensor:
        """(C_out * 8, C_in * 8, k, k), rebuilt from ``weight`` on every call."""
        w = self.weight
        ws = [d4.act(w.index_select(2, self.perms[g]), g) for g in range(d4.ORDER)]
        k = w.shape[-1]
        return torch.stack(ws, dim=1).reshape(self.c_out * d4.ORDER, -1, k, k)

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, o, h, w = f.shape
        bias = self.bias.repeat_interleave(d4.ORDER)
        y = F.conv2d(
            _masked(f, mask).reshape(b, c * o, h, w),
            self.kernel(),
            bias,
            padding=self.pad,
            dilation=self.dilation,
        )
        return _masked(y.view(b, self.c_out, d4.ORDER, h, w), mask)


class MaskedNorm(nn.Module):
    """Per-sample, per-channel normalisation over orientations and valid pixels (statistics are
    D4-invariant, so the layer is equivariant); affine scale/shift per channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(2)  # (B, 1, 1, H, W)
        n = (m.sum(dim=(-1, -2, -3), keepdim=True) * f.shape[2]).clamp_min(1.0)
        mean = (f * m).sum(dim=(-1, -2, -3), keepdim=True) / n
        var = (((f - mean) * m) ** 2).sum(dim=(-1, -2, -3), keepdim=True) / n
        y = (f - mean) * torch.rsqrt(var + self.eps)
        y = y * self.scale.view(1, -1, 1, 1, 1) + self.shift.view(1, -1, 1, 1, 1)
        return y * m


class GroupResBlock(nn.Module):
    """``f + gconv(relu(norm(f)))``; pointwise ReLU commutes with the slot permutation."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.norm = MaskedNorm(channels)
        self.conv = GroupConv(channels, channels, 3, dilation)

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return f + self.conv(F.relu(self.norm(f, mask)), mask)


def orientation_pool(f: torch.Tensor) -> torch.Tensor:
    """Regular -> scalar fields, mean over the 8 orientation slots: ``pool(g·f) = T(g) pool(f)``."""
    return f.mean(dim=2)


def invariant_pool(f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Regular (or scalar) features -> (B, C) vectors, masked mean over orientations and valid pixels:
    ``pool(g·f) = pool(f)``."""
    if f.dim() == 5:
        f = f.mean(dim=2)
    return (f * mask).sum(dim=(-1, -2)) / mask.sum(dim=(-1, -2)).clamp_min(1.0)


class D4Encoder(nn.Module):
    """Lifting conv, then residual group convs with growing dilation (1, 2, 4, ...): receptive field
    ``3 + 2 * sum(dilations)`` pixels. ``(B, C_in, H, W), mask -> (B, C_out, 8, H, W)``, exactly equivariant.

    With ``skip=True`` the input itself is appended, repeated over the 8 slots (a scalar field embeds
    in the regular representation that way), so ``C_out = channels + C_in`` and a head can read each
    pixel's own colour directly: a pointwise colour map needs no deep path.
    """

    def __init__(self, c_in: int, channels: int = 8, depth: int = 4, skip: bool = False):
        super().__init__()
        self.lift = LiftingConv(c_in, channels, 3)
        self.blocks = nn.ModuleList(GroupResBlock(channels, dilation=2**i) for i in range(depth))
        self.norm = MaskedNorm(channels)
        self.skip = skip
        self.out_channels = channels + (c_in if skip else 0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = self.lift(x, mask)
        for blk in self.blocks:
            f = blk(f, mask)
        f = F.relu(self.norm(f, mask))
        if self.skip:
            x = (x * mask).unsqueeze(2).expand(-1, -1, d4.ORDER, -1, -1)
            f = torch.cat([f, x], dim=1)
        return f


class GridHead(nn.Module):
    """Regular features -> per-pixel logits ``(B, n_out, H, W)``.

    The equivariant part maps each orientation slot with the same 1x1 layer and averages the slots.
    ``breaking=True`` adds a 1x1 map that reads the 8 slots with separate weights (zero at init): it
    lets the head express direction-dependent rules, and is what the equivariance term of the
    homotopy distance measures.
    """

    def __init__(self, channels: int, n_out: int = 10, hidden: int = 32, breaking: bool = True):
        super().__init__()
        self.inner = nn.Conv2d(channels, hidden, 1)
        self.outer = nn.Conv2d(hidden, n_out, 1)
        self.breaking = nn.Conv2d(channels * d4.ORDER, n_out, 1, bias=False) if breaking else None
        if self.breaking is not None:
            nn.init.zeros_(self.breaking.weight)

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, o, h, w = f.shape
        slots = f.transpose(1, 2).reshape(b * o, c, h, w)
        hid = F.relu(self.inner(slots)).view(b, o, -1, h, w).mean(dim=1)
        y = self.outer(hid)
        if self.breaking is not None:
            y = y + self.breaking(f.reshape(b, c * o, h, w))
        return y * mask

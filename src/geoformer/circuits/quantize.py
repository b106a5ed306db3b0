"""Fake quantisation of a GPT's attention and feed-forward weights, separately.

Symmetric per-output-channel round-to-nearest: for row i of W (one output channel) with
``qmax = 2^(bits-1) - 1`` (127 for int8, 7 for int4),

    s_i = max_j |W_ij| / qmax,    q_ij = clamp(round(W_ij / s_i), -qmax, qmax),    W'_ij = s_i q_ij,

so each row takes at most ``2 qmax + 1`` values and |W_ij - W'_ij| <= s_i / 2. A zero row keeps
s_i = 1 (it quantises to zeros). The weights are replaced by W' (float storage): this measures the
accuracy cost of the precision, not the memory or speed.

Groups (``targets``) in every block: ``attn`` = ``attn.c_attn`` + ``attn.c_proj`` (4 C^2 weights in a
standard block), ``ffn`` = ``mlp.c_fc`` + ``mlp.c_proj`` (8 C^2), and the halves ``ffn_fc`` and
``ffn_proj`` (4 C^2 each), which match attention's parameter count.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn

from geoformer.errors import GeoformerError

GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("attn.c_attn", "attn.c_proj"),
    "ffn": ("mlp.c_fc", "mlp.c_proj"),
    "ffn_fc": ("mlp.c_fc",),
    "ffn_proj": ("mlp.c_proj",),
}


def qmax(bits: int) -> int:
    if not 2 <= bits <= 16:
        raise GeoformerError(f"bits must be in 2..16, got {bits}")
    return 2 ** (bits - 1) - 1


def channel_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row scales s_i = max_j |W_ij| / qmax (1 for an all-zero row), shape (rows, 1)."""
    s = w.detach().abs().amax(dim=-1, keepdim=True) / qmax(bits)
    return torch.where(s > 0, s, torch.ones_like(s))


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (as a float tensor) and per-row scales of ``w`` (out x in)."""
    s = channel_scales(w, bits)
    q = torch.clamp(torch.round(w / s), -qmax(bits), qmax(bits))
    return q, s


def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """s * clamp(round(w / s), -qmax, qmax) per output row; same shape and dtype as ``w``."""
    q, s = quantize(w, bits)
    return (q * s).to(w.dtype)


def group_modules(model: nn.Module, targets: Iterable[str]) -> dict[str, nn.Linear]:
    """``{"blocks.<l>.<matrix>": Linear}`` for the named groups of every block."""
    targets = list(targets)
    unknown = [t for t in targets if t not in GROUPS]
    if unknown:
        raise GeoformerError(f"unknown quantisation group {unknown[0]!r}; known: {', '.join(GROUPS)}")
    out = {}
    for i, b in enumerate(model.blocks):
        for t in targets:
            for m in GROUPS[t]:
                out[f"blocks.{i}.{m}"] = b.get_submodule(m)
    return out


@torch.no_grad()
def quantize_model(
    model: nn.Module, targets: Iterable[str], bits: int, *, inplace: bool = False
) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself) with the weights of ``targets`` fake-quantised."""
    m = model if inplace else copy.deepcopy(model)
    for lin in group_modules(m, targets).values():
        lin.weight.copy_(fake_quantize(lin.weight, bits))
    return m


def group_size(model: nn.Module, targets: Iterable[str]) -> int:
    """Number of weights in the named groups."""
    return sum(lin.weight.numel() for lin in group_modules(model, targets).values())


__all__ = [
    "GROUPS",
    "qmax",
    "channel_scales",
    "quantize",
    "fake_quantize",
    "group_modules",
    "quantize_model",
    "group_size",
]

"""Control kinds: attention that does not select. They tell whether a kind's selection contributes at all.

- ``none``: the attention sub-layer returns zeros (no token mixing; the model is an MLP stack on token and
  position embeddings, so it can only learn what the current token and its position predict).
- ``uniform``: every causal key gets the same weight, ``y_i = mean_{j <= i} v_j`` (mixing without selection).
- ``self_only``: every query attends to itself only, ``y_i = v_i`` (an extra per-token linear map, no mixing).

A kind whose trained model matches ``uniform`` or ``self_only`` has learned nothing its selection adds; one
that matches ``none`` contributes nothing. Each has the same projections as ``sdpa`` (``none`` has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from geoformer.attention.base import QKVAttention, causal_mask
from geoformer.attention.registry import register


@register("none")
class NoAttention(nn.Module):
    """The attention sub-layer switched off: ``(B, T, C) -> zeros``. No parameters, no weights to report."""

    control = True  # left out of `geoformer bench attention` unless named: there is nothing to time

    @dataclass
    class Options:
        pass

    def __init__(self, n_embd: int, n_head: int, *, dropout: float, bias: bool, block_size: int, opts) -> None:
        super().__init__()
        self.n_embd, self.n_head, self.opts = n_embd, n_head, opts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def uniform_weights(T: int, device=None, dtype=None) -> torch.Tensor:
    """(T, T) causal weights ``1 / (i + 1)`` for ``j <= i``, 0 above the diagonal."""
    n = torch.arange(1, T + 1, device=device, dtype=dtype or torch.float32)
    return causal_mask(T, device).to(n.dtype) / n[:, None]


@register("uniform")
class UniformAttention(QKVAttention):
    """``y_i = mean_{j <= i} v_j`` per head (q and k are computed by the shared projection but unused)."""

    dot_product = True

    control = True

    @dataclass
    class Options:
        width: int = 0  # 0 = n_embd

    def _weights(self, q: torch.Tensor) -> torch.Tensor:
        return uniform_weights(q.size(-2), q.device, q.dtype)

    def attend(self, q, k, v):
        # cumulative mean: O(T) memory, same result as the (T, T) weights applied to v
        n = torch.arange(1, v.size(-2) + 1, device=v.device, dtype=v.dtype)[:, None]
        return v.cumsum(-2) / n

    def attention_weights(self, x):
        q, _, _ = self.split_heads(x)
        return self._weights(q).expand(q.size(0), q.size(1), -1, -1)

    def naive(self, q, k, v):
        return self._weights(q) @ v


@register("self_only")
class SelfOnlyAttention(QKVAttention):
    """``y_i = v_i``: each query attends to itself alone (weights = identity)."""

    dot_product = True

    control = True

    @dataclass
    class Options:
        width: int = 0  # 0 = n_embd

    def attend(self, q, k, v):
        return v

    def mask_for(self, q, k):
        return torch.eye(q.size(-2), dtype=torch.bool, device=q.device)

    def attention_weights(self, x):
        q, _, _ = self.split_heads(x)
        eye = torch.eye(q.size(-2), device=q.device, dtype=q.dtype)
        return eye.expand(q.size(0), q.size(1), -1, -1)


__all__ = ["NoAttention", "UniformAttention", "SelfOnlyAttention", "uniform_weights"]

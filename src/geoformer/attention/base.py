"""Shared pieces of the dot-product attention kinds."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer.errors import GeoformerError


def causal_mask(T: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T, T) mask, True where query t may attend to key s (s <= t)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def masked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Explicit reference: softmax(q k^T * scale, masked) v.

    ``q, k, v``: (..., T, D); ``mask``: boolean, broadcastable to (..., T, T), True = keep.
    Every row must keep at least one key (the causal diagonal guarantees it here).
    """
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class QKVAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection and an output projection.

    Subclasses implement :meth:`attend` on (B, H, T, D) tensors; everything else
    (projections, head split, dropout) is shared so the kinds differ only in the kernel. A kind whose
    options have a positive ``width`` attends in that many dimensions (``D = width / n_head``) instead of
    ``n_embd``: a standard-attention baseline with as few attention parameters as a narrow variant.
    """

    def __init__(
        self, n_embd: int, n_head: int, *, dropout: float, bias: bool, block_size: int, opts
    ) -> None:
        super().__init__()
        width = getattr(opts, "width", 0) or n_embd
        if not (isinstance(width, int) and width > 0):
            raise GeoformerError(f"model.attn.width must be a positive integer (0 = n_embd), got {width!r}")
        if width % n_head != 0:
            name = "n_embd" if width == n_embd else "model.attn.width"
            raise GeoformerError(f"{name}={width} is not divisible by n_head={n_head}")
        self.n_head, self.n_embd, self.block_size = n_head, n_embd, block_size
        self.width = width
        self.opts = opts
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * width, bias=bias)
        self.c_proj = nn.Linear(width, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.width, dim=2)
        shape = (B, T, self.n_head, self.width // self.n_head)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))  # type: ignore[return-value]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.split_heads(x)
        y = self.attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, self.width)
        return self.resid_dropout(self.c_proj(y))

    def dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def mask_for(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The boolean keep-mask this kind applies; (T, T) or (B, H, T, T). Used by tests and `naive`."""
        return causal_mask(q.size(-2), q.device)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, H, T, T) attention probabilities this kind applies to ``x`` (diagnostics, tests)."""
        q, k, _ = self.split_heads(x)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        return torch.softmax(scores.masked_fill(~self.mask_for(q, k), float("-inf")), dim=-1)

    def head_labels(self) -> list[str]:
        """One label per head, used to group diagnostics (e.g. by irrep for gauge attention)."""
        return [f"h{i}" for i in range(self.n_head)]

    def naive(self, q, k, v):
        """Explicit reference with this kind's mask (no dropout)."""
        return masked_softmax_attention(q, k, v, self.mask_for(q, k))


def sdpa(q, k, v, *, mask=None, causal=False, dropout_p=0.0):
    """Thin wrapper so every kind calls SDPA the same way."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)

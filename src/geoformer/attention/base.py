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


def rotary_tables(T: int, D: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, D/2) of rotary embeddings: position t turns pair i by the angle t * base^(-2i/D)."""
    if D % 2:
        raise GeoformerError(f"rotary embeddings need an even head dimension, got {D}")
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=device) / D)
    ang = torch.arange(T, dtype=torch.float64, device=device)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x_i, x_{i + D/2}) of ``x`` (..., T, D) by the angles of ``cos``/``sin`` (>= T, D/2).

    A pure rotation per position: norms are kept, and <R_m q, R_n k> depends on m - n only (RoFormer)."""
    T, half = x.size(-2), x.size(-1) // 2
    c, s_ = cos[:T].to(x.dtype), sin[:T].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s_, x1 * s_ + x2 * c), dim=-1)


def qk_rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMS-normalise each head's query or key vector (no gain), as QK-norm does."""
    return F.rms_norm(x, (x.size(-1),), eps=eps)


class QKVAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection and an output projection.

    Subclasses implement :meth:`attend` on (B, H, T, D) tensors; everything else
    (projections, head split, dropout) is shared so the kinds differ only in the kernel. A kind whose
    options have a positive ``width`` attends in that many dimensions (``D = width / n_head``) instead of
    ``n_embd``: a standard-attention baseline with as few attention parameters as a narrow variant.

    Kinds whose logits are dot products q . k (``dot_product = True``) also take rotary position embeddings
    and QK-norm (:meth:`set_qk_features`, called by the model for ``model.pos = "rope"`` / ``model.qk_norm``):
    both act on q and k in :meth:`split_heads`, so every path of the kind (kernel, reference, weights) sees them.
    """

    dot_product = False  # True where q . k are the logits (rotary and QK-norm mean something there)

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

    def set_qk_features(self, *, rope: bool, qk_norm: bool, max_len: int) -> None:
        """Rotary embeddings on q and k for positions < ``max_len``, and/or QK-norm (RMS-normalised q and k)."""
        if (rope or qk_norm) and not self.dot_product:
            raise GeoformerError(f"{self.kind} does not form q . k logits: it takes no rotary embeddings or QK-norm")
        self.qk_norm = qk_norm
        self.rope = rope
        if rope:
            cos, sin = rotary_tables(max_len, self.width // self.n_head)
            self.register_buffer("rope_cos", cos.float(), persistent=False)
            self.register_buffer("rope_sin", sin.float(), persistent=False)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.width, dim=2)
        shape = (B, T, self.n_head, self.width // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if getattr(self, "qk_norm", False):
            q, k = qk_rms_norm(q), qk_rms_norm(k)
        if getattr(self, "rope", False):
            q, k = apply_rotary(q, self.rope_cos, self.rope_sin), apply_rotary(k, self.rope_cos, self.rope_sin)
        return q, k, v

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

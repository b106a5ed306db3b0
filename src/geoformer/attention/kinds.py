"""The baseline attention kinds: sdpa, naive, local (sliding window), topk."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoformer.attention.base import QKVAttention, causal_mask, masked_softmax_attention, sdpa
from geoformer.attention.registry import register
from geoformer.errors import GeoformerError


@register("sdpa")
class SDPAAttention(QKVAttention):
    """Standard causal attention through ``F.scaled_dot_product_attention`` (fused kernels).

    ``temperature`` divides the logits: softmax(q k^T / (temperature sqrt(d))); values below 1 sharpen
    attention and make the loss surface ill-conditioned (the homotopy-lr stress case uses 0.3).
    ``width`` > 0 attends in ``width`` dimensions instead of ``n_embd`` (parameter-matched baselines).
    """

    dot_product = True

    @dataclass
    class Options:
        temperature: float = 1.0
        width: int = 0  # 0 = n_embd; else the q/k/v width (a multiple of n_head)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if self.opts.temperature <= 0:
            raise GeoformerError(f"model.attn.temperature must be > 0, got {self.opts.temperature}")

    def scale(self, d: int) -> float:
        return 1.0 / (self.opts.temperature * math.sqrt(d))

    def attention_weights(self, x):
        q, k, _ = self.split_heads(x)
        scores = (q @ k.transpose(-2, -1)) * self.scale(q.size(-1))
        return torch.softmax(scores.masked_fill(~self.mask_for(q, k), float("-inf")), dim=-1)

    def naive(self, q, k, v):
        return masked_softmax_attention(q, k, v, self.mask_for(q, k), scale=self.scale(q.size(-1)))

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout_p(), scale=self.scale(q.size(-1))
        )


@register("naive")
class NaiveAttention(QKVAttention):
    """Explicit softmax(QK^T / sqrt(d)) V with a materialised causal mask: the reference in tests."""

    dot_product = True

    @dataclass
    class Options:
        pass

    def attend(self, q, k, v):
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return self.attn_dropout(torch.softmax(scores, dim=-1)) @ v


@register("local")
class LocalAttention(QKVAttention):
    """Sliding-window causal attention: query t sees keys t-window+1 .. t.

    Runs as one SDPA call with a boolean band mask (memory O(T^2) for the mask only, bool).
    """

    dot_product = True

    @dataclass
    class Options:
        window: int = 32

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if self.opts.window < 1:
            raise GeoformerError(f"model.attn.window must be >= 1, got {self.opts.window}")

    def mask_for(self, q, k):
        T = q.size(-2)
        i = torch.arange(T, device=q.device)
        d = i[:, None] - i[None, :]
        return (d >= 0) & (d < self.opts.window)

    def attend(self, q, k, v):
        return sdpa(q, k, v, mask=self.mask_for(q, k), dropout_p=self.dropout_p())


@register("topk")
class TopKAttention(QKVAttention):
    """Each query keeps its k largest causal scores (ties broken by index) and renormalises.

    The scores are materialised (O(T^2) memory); this is a sparsity pattern study, not a fast kernel.
    """

    dot_product = True

    @dataclass
    class Options:
        k: int = 8

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if self.opts.k < 1:
            raise GeoformerError(f"model.attn.k must be >= 1, got {self.opts.k}")

    def _scores(self, q, k):
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        return scores.masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))

    def _keep(self, scores):
        kk = min(self.opts.k, scores.size(-1))
        idx = scores.topk(kk, dim=-1).indices
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)
        return keep & torch.isfinite(scores)  # rows with fewer than k causal keys keep only those

    def mask_for(self, q, k):
        return self._keep(self._scores(q, k))

    def attend(self, q, k, v):
        scores = self._scores(q, k)
        scores = scores.masked_fill(~self._keep(scores.detach()), float("-inf"))
        return self.attn_dropout(torch.softmax(scores, dim=-1)) @ v


__all__ = ["SDPAAttention", "NaiveAttention", "LocalAttention", "TopKAttention", "masked_softmax_attention"]

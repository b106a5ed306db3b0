r"""Fisher-Rao attention: each query and key is a categorical distribution over the head's D coordinates.

For head ``h`` with learnable inverse temperature :math:`\beta_h > 0`:

.. math::

    p_t = \operatorname{softmax}(q_t), \quad r_s = \operatorname{softmax}(k_s), \qquad
    a_{ts} = \operatorname{softmax}_{s \le t}\big(-\beta\, d_{FR}(p_t, r_s)\big), \quad y_t = \sum_s a_{ts} v_s,

    d_{FR}(p, r) = 2\arccos\textstyle\sum_k \sqrt{p_k r_k} = 4\arcsin\big(\tfrac12\|\sqrt p - \sqrt r\|\big).

Values are aggregated as usual (Euclidean weighted mean): the geometry is in the similarity.

**Which path runs.** The Bhattacharyya coefficient :math:`\mathrm{BC} = \sqrt p\cdot\sqrt r` is a dot
product, so ``softmax(beta * BC)`` is plain SDPA on the square-root features (``path = "bhattacharyya"``,
fused, memory linear in T). The Fisher-Rao distance is ``2 arccos(BC)``: a non-linear function of the dot
product, and no scaling of the logits turns ``-beta * 2 arccos(BC)`` into ``beta' * BC`` (the two orders
agree, the weights do not). The default, ``path = "distance"``, is the faithful one: the explicit
(B, H, T, T) distance matrix from ``cdist`` of the square-root vectors, an explicitly quadratic path.
Both are tested against their own explicit references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoformer.attention.base import QKVAttention, causal_mask
from geoformer.attention.registry import register
from geoformer.errors import GeoformerError
from geoformer.geometry import fisher

PATHS = ("distance", "bhattacharyya")


@register("fisher_rao")
class FisherRaoAttention(QKVAttention):
    """Attention by Fisher-Rao distance between softmax distributions (see the module docstring)."""

    @dataclass
    class Options:
        beta: float = 4.0  # initial inverse temperature, one per head
        path: str = "distance"  # "distance": -beta * d_FR (explicit T x T); "bhattacharyya": beta * BC (SDPA)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.opts
        if not o.beta > 0:
            raise GeoformerError(f"model.attn.beta must be > 0, got {o.beta}")
        if o.path not in PATHS:
            raise GeoformerError(f"model.attn.path must be one of {', '.join(PATHS)}, got {o.path!r}")
        self.log_beta = torch.nn.Parameter(torch.full((self.n_head,), math.log(o.beta)))

    def _beta(self, dtype) -> torch.Tensor:
        return self.log_beta.exp().view(-1, 1, 1).to(dtype)

    def _logits(self, q, k):
        sp, sr = fisher.sqrt_categorical(q), fisher.sqrt_categorical(k)
        if self.opts.path == "bhattacharyya":
            return self._beta(q.dtype) * fisher.bhattacharyya(sp, sr)
        return -self._beta(q.dtype) * fisher.pairwise_fisher_rao(sp, sr)

    def _weights(self, q, k):
        logits = self._logits(q, k).masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def attend(self, q, k, v):
        if self.opts.path == "bhattacharyya":
            sp, sr = fisher.sqrt_categorical(q), fisher.sqrt_categorical(k)
            return F.scaled_dot_product_attention(
                sp * self._beta(q.dtype), sr, v, is_causal=True, dropout_p=self.dropout_p(), scale=1.0
            )
        return self.attn_dropout(self._weights(q, k)) @ v

    def attention_weights(self, x):
        q, k, _ = self.split_heads(x)
        return self._weights(q, k)

    def naive(self, q, k, v):
        """Slow reference: probabilities, and ``2 arccos(sum_k sqrt(p_k r_k))`` over broadcast (T, T, D) pairs."""
        p, r = torch.softmax(q, dim=-1), torch.softmax(k, dim=-1)
        bc = torch.sqrt(p.unsqueeze(-2) * r.unsqueeze(-3)).sum(-1)
        beta = self._beta(q.dtype)
        logits = (
            beta * bc if self.opts.path == "bhattacharyya" else -beta * 2 * torch.arccos(bc.clamp(max=1.0))
        )
        logits = logits.masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return torch.softmax(logits, dim=-1) @ v


__all__ = ["FisherRaoAttention"]

r"""Hyperbolic attention: queries, keys and values in a Poincaré ball with learnable curvature per head.

For head ``h`` with curvature :math:`c_h > 0` and inverse temperature :math:`\beta_h > 0` (both learnable,
stored as logs so they stay positive):

.. math::

    x^q_t = \exp^{c}_0(q_t), \quad x^k_s = \exp^{c}_0(k_s), \qquad
    a_{ts} = \operatorname{softmax}_{s \le t}\big(-\beta\, d_c(x^q_t, x^k_s)\big),

    y_t = \log^{c}_0\Big(\operatorname{gyromidpoint}_c\big(\{\exp^c_0(v_s)\}_{s}, \{a_{ts}\}_{s}\big)\Big)

with :math:`d_c` the Poincaré distance and the weighted Möbius gyromidpoint
:math:`\tfrac12\otimes_c \big(\sum_s a_{ts}\lambda_s x^v_s / \sum_s a_{ts}(\lambda_s - 1)\big)`
(:func:`geoformer.geometry.poincare.gyromidpoint`). The output is mapped back to the tangent space at the
origin so the usual Euclidean output projection follows. ``aggregate = "tangent"`` replaces the midpoint
by the Euclidean average of the values (the weighted mean in the tangent space at the origin), which
leaves only the similarity hyperbolic.

A per-head additive bias on the logits (``-beta d + b`` in the hyperbolic-attention literature) is left
out: softmax over keys is invariant to it.

**Path.** Explicitly quadratic: the (B, H, T, T) distance matrix comes from one ``cdist`` and the closed form
:math:`d_c = \tfrac{2}{\sqrt c}\operatorname{arsinh}\big(\sqrt c\|x-y\| / \sqrt{(1-c\|x\|^2)(1-c\|y\|^2)}\big)`,
the midpoint from two matmuls. There is no SDPA form: the logit is an arsinh of a ratio of
:math:`\|x-y\|` to a product of per-point factors, not a bilinear form in any fixed feature map, and a
monotone transform of it does not turn it into one.

**Stability (float32).** Points are projected to radius :math:`(1 - 4\cdot10^{-3})/\sqrt c`; zero vectors,
huge norms and points at the rim give finite values and gradients (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geoformer.attention.base import QKVAttention, causal_mask
from geoformer.attention.registry import register
from geoformer.errors import GeoformerError
from geoformer.geometry import poincare

AGGREGATES = ("midpoint", "tangent")
_LOG_C_RANGE = (-9.0, 9.0)  # c in [1.2e-4, 8.1e3]: keeps sqrt(c) and 1/sqrt(c) finite in float32


@register("hyperbolic")
class HyperbolicAttention(QKVAttention):
    """Attention by Poincaré-ball distance with a gyromidpoint of the values (see the module docstring)."""

    @dataclass
    class Options:
        curvature: float = 1.0  # initial c > 0 (the ball has curvature -c), one per head
        beta: float = 1.0  # initial inverse temperature of the distance logits, one per head
        learn_curvature: bool = True
        aggregate: str = "midpoint"  # "midpoint" (Möbius gyromidpoint) or "tangent" (mean at the origin)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.opts
        if not o.curvature > 0:
            raise GeoformerError(f"model.attn.curvature must be > 0, got {o.curvature}")
        if not o.beta > 0:
            raise GeoformerError(f"model.attn.beta must be > 0, got {o.beta}")
        if o.aggregate not in AGGREGATES:
            raise GeoformerError(
                f"model.attn.aggregate must be one of {', '.join(AGGREGATES)}, got {o.aggregate!r}"
            )
        H = self.n_head
        self.log_c = torch.nn.Parameter(
            torch.full((H,), math.log(o.curvature)), requires_grad=o.learn_curvature
        )
        self.log_beta = torch.nn.Parameter(torch.full((H,), math.log(o.beta)))

    def curvature(self) -> torch.Tensor:
        """The per-head curvature parameters :math:`c_h > 0`, (H, 1, 1)."""
        return self.log_c.clamp(*_LOG_C_RANGE).exp().view(-1, 1, 1)

    def _beta(self) -> torch.Tensor:
        return self.log_beta.exp().view(-1, 1, 1)

    def _logits(self, q, k):
        c = self.curvature().to(q.dtype)
        d = poincare.pairwise_dist(poincare.expmap0(q, c), poincare.expmap0(k, c), c)
        return -self._beta().to(q.dtype) * d

    def _aggregate(self, w, v):
        if self.opts.aggregate == "tangent":
            return w @ v
        c = self.curvature().to(v.dtype)
        return poincare.logmap0(poincare.gyromidpoint(w, poincare.expmap0(v, c), c), c)

    def _weights(self, q, k):
        logits = self._logits(q, k).masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def attend(self, q, k, v):
        return self._aggregate(self.attn_dropout(self._weights(q, k)), v)

    def attention_weights(self, x):
        q, k, _ = self.split_heads(x)
        return self._weights(q, k)

    def naive(self, q, k, v):
        r"""Slow reference with the textbook formulas on broadcast (B, H, T, S, D) tensors:
        :math:`d = \operatorname{arcosh}(1 + 2c\|x-y\|^2 / ((1-c\|x\|^2)(1-c\|y\|^2)))/\sqrt c` and the
        gyromidpoint as explicit weighted sums over the key axis."""
        c = self.curvature().to(q.dtype)
        sc = c.sqrt()

        def exp0(u):
            n = u.norm(dim=-1, keepdim=True)
            return torch.tanh(sc * n) * u / (sc * n)

        xq, xk, xv = exp0(q), exp0(k), exp0(v)
        sq = (xq.unsqueeze(-2) - xk.unsqueeze(-3)).pow(2).sum(-1)  # (B, H, T, S); c is (H, 1, 1)
        nq = 1 - c * xq.pow(2).sum(-1, keepdim=True)  # (B, H, T, 1)
        nk = 1 - c * xk.pow(2).sum(-1, keepdim=True)  # (B, H, S, 1)
        d = torch.arccosh(1 + 2 * c * sq / (nq * nk.transpose(-2, -1))) / sc
        logits = (-self._beta().to(q.dtype) * d).masked_fill(
            ~causal_mask(q.size(-2), q.device), float("-inf")
        )
        w = torch.softmax(logits, dim=-1)
        if self.opts.aggregate == "tangent":
            return w @ v
        lam = 2 / (1 - c * xv.pow(2).sum(-1, keepdim=True))  # (B, H, S, 1)
        num = (w.unsqueeze(-1) * (lam * xv).unsqueeze(-3)).sum(-2)  # (B, H, T, D)
        two_mean = num / (w * (lam - 1).transpose(-2, -1)).sum(-1, keepdim=True)
        n = two_mean.norm(dim=-1, keepdim=True)
        mid = torch.tanh(0.5 * torch.atanh(sc * n)) * two_mean / (sc * n)
        m = mid.norm(dim=-1, keepdim=True)
        return torch.atanh(sc * m) * mid / (sc * m)


__all__ = ["HyperbolicAttention"]

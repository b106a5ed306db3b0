r"""Quantum-fidelity attention: each query and key is a normalised complex state vector per head.

A head of width D holds ``n = D / 2`` complex amplitudes, the first half of the coordinates real parts and
the second half imaginary parts. With a learnable inverse temperature :math:`\beta_h > 0` per head:

.. math::

    \psi_t = \frac{q_t^{re} + i\,q_t^{im}}{\|q_t\|}, \quad \phi_s = \frac{k_s^{re} + i\,k_s^{im}}{\|k_s\|},
    \qquad a_{ts} = \operatorname{softmax}_{s \le t}\big(\beta\,|\langle\psi_t|\phi_s\rangle|^2\big),
    \quad y_t = \sum_s a_{ts} v_s .

Values stay real (the output projection is real). The fidelity is computed without complex tensors or
loops, in one of two ways (:mod:`geoformer.geometry.fisher`):

* ``path = "matmul"`` (default): :math:`\mathrm{Re} = a_r\cdot b_r + a_i\cdot b_i`,
  :math:`\mathrm{Im} = a_r\cdot b_i - a_i\cdot b_r` -- (T, T) matmuls at width n (two per part), then
  :math:`F = \mathrm{Re}^2 + \mathrm{Im}^2`: an explicit (B, H, T, T) path, the cheapest at short T.
* ``path = "features"``: :math:`F = \operatorname{tr}(\rho_\psi\rho_\phi) = \varphi(\psi)\cdot\varphi(\phi)`
  with the n^2 real density-matrix features, so the whole kernel is one fused SDPA call at head width
  n^2 = D^2/4 (memory linear in T, compute T^2 n^2).

``tile > 0`` runs the adaptive tiled kernel (:mod:`geoformer.attention.tiled`): the refined key tiles are
scored with the Re/Im matmuls on the gathered D-wide states, while the tile selection and the summary
tokens use the n^2 features. The summary of a tile is its mean feature, i.e. the tile's *mixed* state
:math:`\bar\rho_j`, and its logit :math:`\beta\langle\psi|\bar\rho_j|\psi\rangle` is exactly the mean
(beta-scaled) fidelity of the query to the tile. (Gathering n^2-wide features for the refined tiles instead
measured 2.1 GiB peak for the demo at T = 4096; the states need n^2 / D = D / 4 times less.)

:class:`QuantumGeometricAttention` is the write-up's demo signature,
``QuantumGeometricAttention(hidden_dim=512, num_heads=8, tile_size=64)`` with ``get_metrics()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from geoformer.attention.base import QKVAttention, causal_mask
from geoformer.attention.registry import register
from geoformer.attention.tiled import tile_selection, tiled_attention, tiled_attention_weights, tiling_metrics
from geoformer.errors import GeoformerError
from geoformer.geometry import fisher

PATHS = ("matmul", "features")


@register("quantum")
class QuantumAttention(QKVAttention):
    """Attention by fidelity of complex states (see the module docstring). ``get_metrics()`` describes the
    last forward."""

    @dataclass
    class Options:
        beta: float = 8.0  # initial inverse temperature of the fidelity logits, one per head
        path: str = "matmul"  # "matmul" (Re/Im matmuls, T x T) or "features" (SDPA on n^2 features)
        tile: int = 0  # > 0: adaptive tiles of this many positions (see attention.tiled); 0 = dense
        refine: int = 4  # key tiles per query tile at full resolution (with tile > 0)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.opts
        if (self.n_embd // self.n_head) % 2:
            raise GeoformerError(
                f"quantum attention needs an even head width (real and imaginary halves), got "
                f"n_embd / n_head = {self.n_embd // self.n_head}"
            )
        if not o.beta > 0:
            raise GeoformerError(f"model.attn.beta must be > 0, got {o.beta}")
        if o.path not in PATHS:
            raise GeoformerError(f"model.attn.path must be one of {', '.join(PATHS)}, got {o.path!r}")
        if o.tile < 0 or o.refine < 1:
            raise GeoformerError(f"model.attn.tile must be >= 0 and refine >= 1, got {o.tile}, {o.refine}")
        self.log_beta = torch.nn.Parameter(torch.full((self.n_head,), math.log(o.beta)))
        self._last: dict[str, Any] | None = None

    def _beta(self, dtype) -> torch.Tensor:
        return self.log_beta.exp().view(-1, 1, 1).to(dtype)

    def states(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(re, im) of the normalised query and key states of ``x`` (B, T, C): four (B, H, T, D/2) tensors."""
        q, k, _ = self.split_heads(x)
        return (*self._states(q), *self._states(k))

    @staticmethod
    def _states(x):
        n = x.size(-1) // 2
        return fisher.normalize_state(x[..., :n], x[..., n:])

    def _weights(self, q, k):
        f = fisher.fidelity(*self._states(q), *self._states(k))
        logits = (self._beta(q.dtype) * f).masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def attend(self, q, k, v):
        o = self.opts
        qs, ks = self._states(q), self._states(k)
        self._last = {"q": tuple(t.detach() for t in qs), "k": tuple(t.detach() for t in ks), "tiles": None}
        if o.tile == 0 and o.path == "matmul":
            return self.attn_dropout(self._weights(q, k)) @ v
        fq = fisher.fidelity_features(*qs) * self._beta(q.dtype)
        fk = fisher.fidelity_features(*ks)
        if o.tile == 0:
            return F.scaled_dot_product_attention(
                fq, fk, v, is_causal=True, dropout_p=self.dropout_p(), scale=1.0
            )
        # refined tiles: fidelities from the D-wide states (two matmuls); selection and summaries: features
        beta5 = self._beta(q.dtype).unsqueeze(-1)  # (H, 1, 1, 1) for (B, H, nT, L, S) tile logits

        def score(a, b):
            n = b.size(-1) // 2
            rot = torch.cat([b[..., n:], -b[..., :n]], dim=-1)  # <a|b> = a.b + i a.rot(b)
            return beta5 * ((a @ b.transpose(-2, -1)).pow(2) + (a @ rot.transpose(-2, -1)).pow(2))

        y, info = tiled_attention(
            torch.cat(qs, dim=-1),
            torch.cat(ks, dim=-1),
            v,
            tile=o.tile,
            refine=o.refine,
            scale=1.0,
            dropout_p=self.dropout_p(),
            score=score,
            summary=(fq, fk),
        )
        self._last["tiles"] = {key: t.detach() for key, t in info.items()}
        return y

    def attention_weights(self, x):
        """The dense fidelity-softmax weights (B, H, T, T) (what ``tile > 0`` approximates)."""
        q, k, _ = self.split_heads(x)
        return self._weights(q, k)

    def naive(self, q, k, v):
        """Slow reference with complex tensors: :math:`|\\langle\\psi|\\phi\\rangle|^2` by ``einsum`` over
        ``torch.complex`` states (dense; with ``tile > 0`` the tiled kernel's own dense weights)."""
        n = q.size(-1) // 2
        psi = torch.complex(q[..., :n], q[..., n:])
        phi = torch.complex(k[..., :n], k[..., n:])
        psi = psi / torch.linalg.vector_norm(psi, dim=-1, keepdim=True)
        phi = phi / torch.linalg.vector_norm(phi, dim=-1, keepdim=True)
        fid = torch.einsum("...tk,...sk->...ts", psi.conj(), phi).abs().pow(2)
        beta = self._beta(q.dtype)
        if self.opts.tile > 0:  # the tiled kernel's dense weights, with the fidelities from this reference
            fq = fisher.fidelity_features(*self._states(q)) * beta
            fk = fisher.fidelity_features(*self._states(k))
            info = tile_selection(fq, fk, fk, tile=self.opts.tile, refine=self.opts.refine, scale=1.0)
            return (
                tiled_attention_weights(fq, fk, info, tile=self.opts.tile, scale=1.0, logits=beta * fid) @ v
            )
        logits = (beta * fid).masked_fill(~causal_mask(q.size(-2), q.device), float("-inf"))
        return torch.softmax(logits, dim=-1) @ v

    @torch.no_grad()
    def get_metrics(self) -> dict[str, Any]:
        """Metrics of the last forward (an empty dict before the first):

        ``mean_fidelity`` / ``max_fidelity`` over causal (query, key) pairs, ``attention_entropy`` (mean over
        queries of the entropy in nats of the dense fidelity softmax) and ``normalized_entropy`` (divided by
        ``log(t + 1)``, 1 = uniform), ``beta`` (per head), ``path``; with ``tile > 0`` also the tile
        selection (:func:`geoformer.attention.tiled.tiling_metrics`). Computed from the stored states on
        request, in blocks of 256 queries (the dense metrics cost O(T^2) time, O(256 T) memory).
        """
        if self._last is None:
            return {}
        qs, ks = self._last["q"], self._last["k"]
        B, H, T, _ = qs[0].shape
        beta = self._beta(qs[0].dtype)
        fsum = fmax = ent = nent = 0.0
        for t0 in range(0, T, 256):  # blocks of queries (diagnostics only, not the forward)
            f = fisher.fidelity(*(t[..., t0 : t0 + 256, :] for t in qs), *ks)
            rows = torch.arange(t0, t0 + f.size(-2), device=f.device)
            keep = torch.arange(T, device=f.device)[None, :] <= rows[:, None]
            fsum += float(f.masked_fill(~keep, 0).sum())
            fmax = max(fmax, float(f.masked_fill(~keep, 0).max()))
            logp = torch.log_softmax((beta * f).masked_fill(~keep, float("-inf")), dim=-1)
            h = -(logp.exp() * logp.masked_fill(~keep, 0)).sum(-1)  # (B, H, rows)
            ent += float(h.sum())
            more = rows >= 1  # a query with one key has entropy 0 of at most 0
            nent += float((h[..., more] / (rows[more] + 1).to(h.dtype).log()).sum())
        n_pairs = B * H * T * (T + 1) / 2
        out: dict[str, Any] = {
            "mean_fidelity": fsum / n_pairs,
            "max_fidelity": fmax,
            "attention_entropy": ent / (B * H * T),
            "normalized_entropy": nent / (B * H * max(T - 1, 1)),
            "beta": self.log_beta.exp().tolist(),
            "path": "tiled" if self.opts.tile > 0 else self.opts.path,
        }
        if self._last["tiles"] is not None:
            out.update(tiling_metrics(self._last["tiles"], self.opts.tile, self.opts.refine))
        return out


class QuantumGeometricAttention(QuantumAttention):
    """The write-up's demo module: ``QuantumGeometricAttention(hidden_dim=512, num_heads=8, tile_size=64)``.

    Causal self-attention (B, T, hidden_dim) -> (B, T, hidden_dim) by state fidelity, on adaptive tiles of
    ``tile_size`` positions (``refine`` of them per query tile at full resolution, one mixed-state summary
    for each other past tile); ``tile_size=0`` gives dense fidelity attention through SDPA on the density
    features. ``get_metrics()`` returns the metrics of the last forward (see :meth:`QuantumAttention.get_metrics`).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        tile_size: int = 64,
        *,
        refine: int = 4,
        beta: float = 8.0,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        opts = QuantumAttention.Options(beta=beta, path="features", tile=tile_size, refine=refine)
        super().__init__(hidden_dim, num_heads, dropout=dropout, bias=bias, block_size=0, opts=opts)


__all__ = ["QuantumAttention", "QuantumGeometricAttention"]

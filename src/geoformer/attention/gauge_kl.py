"""``gauge_kl``: gauge-equivariant KL attention over real SO(3) irreps (seed 001).

Each token i carries, per head h of spin l (dimension ``K = 2l + 1``), a Gaussian belief
``q_i = N(mu_i, Sigma_i)`` in R^K and a gauge frame ``phi_i`` in so(3) = R^3, whose matrix in the irrep is
``R_i = D^l(phi_i) = expm(sum_a phi_ia G^l_a)``. Attention compares beliefs after parallel transport
``Omega_ij = R_i R_j^T``:

    beta_ij = softmax_j( -KL(q_i || Omega_ij[q_j]) / tau ),     tau = kappa_h        (scale_sqrt_d = false)
                                                               tau = kappa_h sqrt(K) (scale_sqrt_d = true)
    m_i     = sum_j beta_ij Omega_ij mu_j,

causally (j <= i). The seed's README writes -KL/kappa; its code divides by kappa sqrt(d) (and adds ALiBi,
which we do not: positions come from the GPT's learned position embeddings).

**Why it is fast.** With ``n_i = R_i^T mu_i``, ``A_i = R_i^T Sigma_i R_i``, ``P_j = R_j^T Sigma_j^{-1} R_j``:

    KL(q_i || Omega_ij q_j) = 1/2 [ <A_i + n_i n_i^T, P_j>_F - 2 n_i . (P_j n_j)
                                    + (n_j^T P_j n_j + ln det Sigma_j) - K - ln det Sigma_i ],

and the last two terms depend on i only, so they cancel in the softmax over j. The logits are therefore
``-1/(2 tau) q~_i . k~_j`` with the augmented per-token vectors (symmetric matrices packed by their upper
triangle, off-diagonal entries weighted 2 on the query side)

    q~_i = [ vecw(A_i + n_i n_i^T), n_i, 1 ],    k~_j = [ vec(P_j), -2 P_j n_j, n_j^T P_j n_j + ln det Sigma_j ],

of dimension ``D = K(K+1)/2 + K + 1`` (3, 10, 21, 36 for l = 0..3), and the transported value sum is
``m_i = R_i sum_j beta_ij n_j``: one ``F.scaled_dot_product_attention`` call per irrep type (all heads of
that type batched, causal, memory linear in T) plus per-token rotations. No T x T x K^2 tensor is formed.
``fused = false`` runs the explicit pairwise reference instead, which materialises ``Omega_ij`` and
``KL_ij`` (T^2 K^2 memory: for tests and small checks only).

**Layer.** ``x (B, T, n_embd)`` -> one linear map ``c_in`` to ``mu`` (width ``W = sum n_heads * K``), to the covariance
parameters (``W`` log-variance-like numbers for ``cov = "diag"``, ``sum n_heads K(K+1)/2`` Cholesky numbers
for ``cov = "full"``, see :mod:`geoformer.geometry.gaussian`) and to the frames (``3`` numbers per token
shared by every head for ``frame = "token"``, the seed's single gauge frame per token; ``3`` per head for
``frame = "head"``) -> the heads' outputs ``m_i`` concatenated (width ``W``) -> an output projection
``c_proj: W -> n_embd``. The seed has no output projection (its embedding *is* the irrep fibre); we need one
to return to the residual stream, so ``W`` need not equal ``n_embd``. ``n_head`` from the model config is
ignored: the heads are the entries of ``irrep_spec``. Heads are ordered by irrep type (first appearance of
each dimension in ``irrep_spec``), then by spec order; :meth:`head_labels` follows that order.

Gauge symmetry: the kernel (``beta``) is invariant under a global ``g``: ``mu -> rho mu``,
``Sigma -> rho Sigma rho^T``, ``R -> rho R`` (or ``R -> rho R rho^T``), ``rho = D^l(g)``. The linear maps,
the LayerNorm around the block and ``c_proj`` are not equivariant (as in the seed).

**Numerics.** Logit convention: ``-KL/kappa`` by default (the written formula); ``scale_sqrt_d = true`` gives
the seed code's ``-KL/(kappa sqrt(K))`` (``configs/gauge_kl.toml`` uses it, since the seed's kappa table came
from that code). Unlike the seed we neither clamp the KL (a clamp would break the exact factorisation above)
nor add jitter before a Cholesky (there is none: ``Sigma`` is parametrised by its factor, and the variance
floor of :func:`geoformer.geometry.gaussian.positive_variance` bounds ``Sigma^{-1}``). Under autocast the
belief maps and the kernel run in float32, because ``q~ . k~`` is a small difference of large terms. SDPA's
fused kernel needs equal head dimensions, so the value tensor is ``q~`` itself, whose columns
``K(K+1)/2 .. K(K+1)/2 + K`` are ``n_j`` (the other columns' sums are dropped). ``l = 0`` heads skip every
rotation (``D^0 = [[1]]``).
The physical limit of this layer is those SDPA calls alone: :func:`gauge_kl_sdpa_reference` builds them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer.attention.registry import register
from geoformer.errors import GeoformerError
from geoformer.geometry import gaussian, so3

__all__ = [
    "IrrepGroup",
    "parse_irrep_spec",
    "augmented_qk",
    "kl_matrix",
    "kl_matrix_pairwise",
    "gauge_kl_weights",
    "gauge_kl_attention",
    "gauge_kl_attention_pairwise",
    "GaugeKLAttention",
    "augmented_head_dims",
    "gauge_kl_sdpa_reference",
]

SEED_IRREP_SPEC: list[tuple[str, int, int]] = [("l0", 5, 1), ("l1", 3, 3), ("l2", 1, 5)]
_MIN_KAPPA, _MAX_KAPPA = 1e-6, 1e6  # a learnable temperature is clamped to this range


# ------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class IrrepGroup:
    """All heads of one irrep type: they run in one SDPA call."""

    l: int
    labels: tuple[str, ...]  # one per head

    @property
    def K(self) -> int:
        return 2 * self.l + 1

    @property
    def n_heads(self) -> int:
        return len(self.labels)

    @property
    def width(self) -> int:
        return self.n_heads * self.K

    @property
    def aug_dim(self) -> int:
        """``D = K(K+1)/2 + K + 1``, the head dimension of the fused SDPA call."""
        return self.K * (self.K + 1) // 2 + self.K + 1


def parse_irrep_spec(spec: Any) -> list[IrrepGroup]:
    """``[[name, n_heads, dim], ...]`` -> groups of heads by irrep type (first-appearance order of ``dim``).

    ``dim`` must be odd (``dim = 2l + 1``), ``n_heads >= 1``, ``name`` a non-empty string used as the
    diagnostics label of those heads; one name cannot stand for two dimensions. Errors are one line.
    """
    where = "model.attn.irrep_spec"
    if not isinstance(spec, list | tuple) or not spec:
        raise GeoformerError(f"{where} must be a non-empty list of [name, n_heads, dim], got {spec!r}")
    groups: dict[int, list[str]] = {}
    dims: dict[str, int] = {}
    for entry in spec:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise GeoformerError(f"{where}: each entry must be [name, n_heads, dim], got {entry!r}")
        name, n, dim = entry
        if not isinstance(name, str) or not name:
            raise GeoformerError(f"{where}: entry {list(entry)!r}: name must be a non-empty string")
        for what, v in (("n_heads", n), ("dim", dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise GeoformerError(f"{where}: entry {list(entry)!r}: {what} must be a positive int")
        if dim % 2 == 0:
            raise GeoformerError(
                f"{where}: entry {list(entry)!r}: dim must be odd (an SO(3) irrep has dim 2l+1), got {dim}"
            )
        if dims.setdefault(name, dim) != dim:
            raise GeoformerError(f"{where}: name {name!r} is used for dims {dims[name]} and {dim}")
        groups.setdefault((dim - 1) // 2, []).extend([name] * n)
    return [IrrepGroup(l=l, labels=tuple(labels)) for l, labels in groups.items()]


# ------------------------------------------------------------------------------------------ the kernel
@functools.lru_cache(maxsize=64)
def _packing(K: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper-triangle indices (r, c) of a K x K matrix and the Frobenius weights (1 on, 2 off the diagonal)."""
    r, c = torch.triu_indices(K, K, device=device)
    return r, c, torch.where(r == c, 1.0, 2.0).to(device)


def augmented_qk(
    mu: torch.Tensor, sigma: torch.Tensor, R: torch.Tensor, *, diag: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented vectors with ``q~_i . k~_j = 2 KL(q_i || Omega_ij q_j) + K + ln det Sigma_i``:

    ``q~_i = [vecw(A_i + n_i n_i^T), n_i, 1]``, ``k~_j = [vec(P_j), -2 P_j n_j, n_j^T P_j n_j + ln det Sigma_j]``
    with ``n = R^T mu``, ``A = R^T Sigma R``, ``P = R^T Sigma^{-1} R``; ``vec`` is the upper triangle and
    ``vecw`` the same with off-diagonal entries doubled (so the dot product is the Frobenius product of
    symmetric matrices). Computed as ``P n = R^T Sigma^{-1} mu``, ``n^T P n = mu^T Sigma^{-1} mu`` and
    ``vec(R^T S R) = T2 vec(S)`` with ``T2[(a,b),(m,m')] = R_ma R_m'b`` (only ``m = m'`` for diagonal ``S``).

    ``mu`` (B, H, T, K); ``sigma`` the variances (B, H, T, K) if ``diag`` else the Cholesky factor
    ``L`` (B, H, T, K, K), ``Sigma = L L^T``; ``R`` (B, H, T, K, K), or (B, 1, T, K, K) for frames shared by
    the heads (then the heads become the columns of per-token matmuls: no per-head tiny matmuls).
    Returns ``q~, k~`` (B, H, T, D), ``D = K(K+1)/2 + K + 1``, contiguous.
    """
    B, H, T, K = mu.shape
    if K == 1 and diag:  # l = 0: R = [[1]], so n = mu, A = Sigma, P = Sigma^{-1}: elementwise, no matmuls
        inv_var = sigma.reciprocal()
        mu_iv = mu * inv_var
        one = torch.ones_like(mu)
        # contiguous: cat keeps its inputs' layout (sigma may be a transposed view), and SDPA's fused kernel
        # on a strided k is 6x slower at T = 4096
        return (torch.cat((sigma + mu * mu, mu, one), -1).contiguous(),
                torch.cat((inv_var, -2 * mu_iv, mu * mu_iv + sigma.log()), -1).contiguous())  # fmt: skip
    shared = R.size(1) == 1 and H > 1
    if shared:  # columns = heads: (B, T, K, H)
        Rc, cols = R[:, 0], lambda t: t.permute(0, 2, 3, 1)
    else:  # columns = 1: (B, H, T, K, 1)
        Rc, cols = R.expand(B, H, T, K, K), lambda t: t.unsqueeze(-1)
    r, c, w = _packing(K, mu.device)
    Rt = Rc.transpose(-1, -2)
    m = cols(mu)
    h = m.size(-1)  # columns per matmul (heads when shared, else 1): each pair of maps below is one matmul
    if diag:
        inv_var = sigma.reciprocal()
        sig_mu = cols(mu * inv_var)  # Sigma^{-1} mu
        logdet = sigma.log().sum(-1)
        T2 = (Rc.index_select(-1, r) * Rc.index_select(-1, c)).transpose(-1, -2)  # (..., Kp, K): the m = m' columns
        A, P = (T2 @ torch.cat((cols(sigma), cols(inv_var)), -1)).split(h, -1)
    else:
        cov = sigma @ sigma.transpose(-1, -2)
        prec = torch.cholesky_inverse(sigma)
        sig_mu = cols(torch.cholesky_solve(mu.unsqueeze(-1), sigma).squeeze(-1))
        logdet = gaussian.logdet_from_cholesky(sigma)
        T2 = (Rc.index_select(-1, r)[..., :, None, :] * Rc.index_select(-1, c)[..., None, :, :]).flatten(-3, -2).transpose(-1, -2)  # (..., Kp, K^2)
        A, P = (T2 @ torch.cat((cols(cov.flatten(-2)), cols(prec.flatten(-2))), -1)).split(h, -1)
    n, Pn = (Rt @ torch.cat((m, sig_mu), -1)).split(h, -1)  # R^T mu and R^T Sigma^{-1} mu = P n
    nPn = (m * sig_mu).sum(-2, keepdim=True)  # mu^T Sigma^{-1} mu = n^T P n
    ld = cols(logdet.unsqueeze(-1))
    q = torch.cat((w.to(n.dtype)[:, None] * (A + n.index_select(-2, r) * n.index_select(-2, c)), n, torch.ones_like(ld)), -2)
    k = torch.cat((P, -2 * Pn, nPn + ld), -2)
    if shared:
        return q.permute(0, 3, 1, 2).contiguous(), k.permute(0, 3, 1, 2).contiguous()
    return q.squeeze(-1), k.squeeze(-1)


def _rotate(R: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``R_i m_i`` per token and head: R (B, H or 1, T, K, K), m (B, H, T, K) -> (B, H, T, K)."""
    if R.size(1) == 1 and m.size(1) > 1:
        return (R[:, 0] @ m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return (R @ m.unsqueeze(-1)).squeeze(-1)


def _causal(T: int, device: torch.device) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def kl_matrix(mu: torch.Tensor, sigma: torch.Tensor, R: torch.Tensor, *, diag: bool) -> torch.Tensor:
    """``KL_ij = KL(q_i || Omega_ij q_j)`` from the augmented vectors: ``1/2 (q~_i . k~_j - K - ln det Sigma_i)``.

    Materialises only (B, H, T, T) (no K^2 per pair); for diagnostics. Shapes as in :func:`augmented_qk`.
    """
    q, k = augmented_qk(mu, sigma, R, diag=diag)
    logdet = sigma.log().sum(-1) if diag else gaussian.logdet_from_cholesky(sigma)
    return 0.5 * (q @ k.transpose(-1, -2) - mu.size(-1) - logdet.unsqueeze(-1))


def kl_matrix_pairwise(mu: torch.Tensor, sigma: torch.Tensor, R: torch.Tensor, *, diag: bool) -> torch.Tensor:
    """Explicit reference: ``KL(N(mu_i, Sigma_i) || N(Omega_ij mu_j, Omega_ij Sigma_j Omega_ij^T))`` for every pair.

    Forms ``Omega_ij = R_i R_j^T`` (..., T, T, K, K) and calls :func:`geoformer.geometry.gaussian.kl_full_cov`.
    """
    cov = torch.diag_embed(sigma) if diag else sigma @ sigma.transpose(-1, -2)
    Omega, mu_t = _transport(mu, R)
    cov_t = Omega @ cov.unsqueeze(-4) @ Omega.transpose(-1, -2)
    cov_t = 0.5 * (cov_t + cov_t.transpose(-1, -2))
    return gaussian.kl_full_cov(mu.unsqueeze(-2), cov.unsqueeze(-3), mu_t, cov_t)


def _transport(mu: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Omega_ij = R_i R_j^T`` (..., T, T, K, K) and the transported means ``Omega_ij mu_j`` (..., T, T, K)."""
    Omega = R.unsqueeze(-3) @ R.unsqueeze(-4).transpose(-1, -2)  # [..., i, j] = R_i R_j^T
    return Omega, (Omega @ mu.unsqueeze(-3).unsqueeze(-1)).squeeze(-1)


def gauge_kl_weights(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    R: torch.Tensor,
    *,
    inv_temp: torch.Tensor | float,
    diag: bool,
    causal: bool = True,
    pairwise: bool = False,
) -> torch.Tensor:
    """``beta_ij = softmax_j(-inv_temp KL_ij)`` (masked to j <= i if ``causal``), shape (..., T, T).

    ``inv_temp`` is ``1/tau`` broadcastable to (..., H, 1, 1). ``pairwise`` uses the explicit reference KL.
    """
    kl = (kl_matrix_pairwise if pairwise else kl_matrix)(mu, sigma, R, diag=diag)
    logits = -inv_temp * kl
    if causal:
        logits = logits.masked_fill(~_causal(kl.size(-1), kl.device), float("-inf"))
    return torch.softmax(logits, dim=-1)


def gauge_kl_attention(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    R: torch.Tensor,
    *,
    inv_temp: torch.Tensor | float,
    diag: bool,
    causal: bool = True,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Fused ``m_i = R_i sum_j beta_ij n_j`` with ``beta_ij = softmax_j(-(inv_temp / 2) q~_i . k~_j)``: one SDPA call.

    The temperature is folded into the queries (per head), so SDPA runs with ``scale=1.0``. The fused CPU/CUDA
    kernels need equal head dimensions (with unequal ones SDPA silently falls back to the T x T math path), so
    the values are ``q~`` itself, of dimension ``D``, whose columns ``Kp .. Kp + K`` are ``n_j = R_j^T mu_j``;
    the output keeps those columns. (..., T, K) -> (..., T, K).
    """
    q, k = augmented_qk(mu, sigma, R, diag=diag)
    K = mu.size(-1)
    Kp = K * (K + 1) // 2
    # the values n_j = R_j^T mu_j are columns Kp..Kp+K of q~_j itself: q~ is the value tensor (the other columns'
    # sums are computed and dropped, as zero padding would be), so no copy of n is made
    m = F.scaled_dot_product_attention(q * (-0.5 * inv_temp), k, q, is_causal=causal, dropout_p=dropout_p,
                                       scale=1.0)[..., Kp : Kp + K]  # fmt: skip
    return m if K == 1 else _rotate(R, m)  # D^0 = [[1]]


def gauge_kl_attention_pairwise(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    R: torch.Tensor,
    *,
    inv_temp: torch.Tensor | float,
    diag: bool,
    causal: bool = True,
    dropout: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Explicit reference ``m_i = sum_j beta_ij Omega_ij mu_j`` with the pairwise KL (T^2 K^2 memory)."""
    beta = gauge_kl_weights(mu, sigma, R, inv_temp=inv_temp, diag=diag, causal=causal, pairwise=True)
    if dropout is not None:
        beta = dropout(beta)
    _, mu_t = _transport(mu, R)
    return (beta.unsqueeze(-1) * mu_t).sum(-2)


# ------------------------------------------------------------------------------------------ the module
@register("gauge_kl")
class GaugeKLAttention(nn.Module):
    """Gauge-equivariant KL attention over SO(3) irreps (see the module docstring for the equations)."""

    @dataclass
    class Options:
        # [name, n_heads, dim] per irrep; dim = 2l + 1; the heads (model.n_head is ignored)
        irrep_spec: list[list[Any]] = field(default_factory=lambda: [list(e) for e in SEED_IRREP_SPEC])
        kappa: float = 1.0  # temperature (initial value if learned)
        learn_kappa: bool = False  # one learnable kappa per head (log-parametrised, clamped to [1e-6, 1e6])
        cov: str = "diag"  # "diag" | "full" (Cholesky-parametrised)
        frame: str = "token"  # "token": one phi_i per token for all heads (the seed) | "head": one per head
        fused: bool = True  # one SDPA call per irrep type; false = explicit pairwise reference (T^2 K^2)
        scale_sqrt_d: bool = False  # logits -KL/(kappa sqrt(K)) (seed's code) instead of -KL/kappa (README)

    def __init__(
        self, n_embd: int, n_head: int, *, dropout: float, bias: bool, block_size: int, opts
    ) -> None:
        super().__init__()
        o = opts
        self.groups = parse_irrep_spec(o.irrep_spec)
        if not (isinstance(o.kappa, int | float) and math.isfinite(o.kappa) and o.kappa > 0):
            raise GeoformerError(f"model.attn.kappa must be a positive finite number, got {o.kappa!r}")
        if o.cov not in ("diag", "full"):
            raise GeoformerError(f"model.attn.cov must be 'diag' or 'full', got {o.cov!r}")
        if o.frame not in ("token", "head"):
            raise GeoformerError(f"model.attn.frame must be 'token' or 'head', got {o.frame!r}")
        self.opts, self.n_embd, self.block_size, self.dropout = o, n_embd, block_size, dropout
        self.n_head = sum(g.n_heads for g in self.groups)
        self.width = sum(g.width for g in self.groups)
        self.diag = o.cov == "diag"
        self._cov_sizes = [g.width if self.diag else g.n_heads * g.K * (g.K + 1) // 2 for g in self.groups]
        self._phi_sizes = [3 * g.n_heads for g in self.groups] if o.frame == "head" else [3]
        # one map for the means, the covariance parameters and the frames (three small matmuls and their
        # gradients cost more than one; checkpoints with the former c_mu / c_cov / c_phi still load)
        self._in_sizes = [self.width, sum(self._cov_sizes), sum(self._phi_sizes)]
        self.c_in = nn.Linear(n_embd, sum(self._in_sizes), bias=bias)
        self.c_proj = nn.Linear(self.width, n_embd, bias=bias)  # named c_proj: GPT scales its init with depth
        log_kappa = torch.full((self.n_head,), math.log(o.kappa))
        if o.learn_kappa:
            self.log_kappa = nn.Parameter(log_kappa)
        else:
            self.register_buffer("log_kappa", log_kappa)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint written before the input maps were one (``c_mu``, ``c_cov``, ``c_phi``) loads into ``c_in``."""
        for kind in ("weight", "bias"):
            old = [f"{prefix}{name}.{kind}" for name in ("c_mu", "c_cov", "c_phi")]
            if all(k in state_dict for k in old):
                state_dict[f"{prefix}c_in.{kind}"] = torch.cat([state_dict.pop(k) for k in old], 0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---------------------------------------------------------------- pieces
    def head_labels(self) -> list[str]:
        """One label per head in output order (irrep type, then spec order), e.g. ``["l0", ..., "l2"]``."""
        return [lab for g in self.groups for lab in g.labels]

    def kappa(self) -> torch.Tensor:
        """The per-head temperatures ``kappa_h``, shape (H,)."""
        return self.log_kappa.clamp(math.log(_MIN_KAPPA), math.log(_MAX_KAPPA)).exp()

    def inv_temps(self) -> list[torch.Tensor]:
        """``1/tau`` per group, shaped (H_g, 1, 1): ``1/kappa_h`` or ``1/(kappa_h sqrt(K))``."""
        out, h0 = [], 0
        kappa = self.kappa()
        for g in self.groups:
            t = kappa[h0 : h0 + g.n_heads] * (math.sqrt(g.K) if self.opts.scale_sqrt_d else 1.0)
            out.append((1.0 / t).view(-1, 1, 1))
            h0 += g.n_heads
        return out

    def beliefs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per irrep group: ``mu`` (B, H, T, K), ``sigma`` (variances (B, H, T, K) or Cholesky (B, H, T, K, K)),
        ``R = D^l(phi)`` (B, H or 1, T, K, K)."""
        B, T, _ = x.shape
        mu_all, cov_all, phi_all = self.c_in(x).split(self._in_sizes, dim=-1)
        mus = mu_all.split([g.width for g in self.groups], dim=-1)
        covs = cov_all.split(self._cov_sizes, dim=-1)
        phis = [p.view(B, T, -1, 3).transpose(1, 2) for p in phi_all.split(self._phi_sizes, dim=-1)]
        if self.opts.frame == "token":  # one phi_i (B, 1, T, 3) for all heads: D^l computed once
            Rs = so3.exp_maps(phis[0], [g.l for g in self.groups])
        out = []
        for i, g in enumerate(self.groups):
            mu = mus[i].view(B, T, g.n_heads, g.K).transpose(1, 2)
            if self.diag:
                sigma = gaussian.positive_variance(covs[i].view(B, T, g.n_heads, g.K).transpose(1, 2))
            else:
                raw = covs[i].view(B, T, g.n_heads, -1).transpose(1, 2)
                sigma = gaussian.cholesky_factor(raw, g.K)
            R = Rs[g.l] if self.opts.frame == "token" else so3.exp_map(phis[i], g.l)
            out.append((mu, sigma, R))
        return out

    # ---------------------------------------------------------------- forward / diagnostics
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            # q~ . k~ cancels terms of size |n|^2 |P| (the KL is their small difference): in bf16 / fp16 the
            # logits would be noise, so the belief maps and the kernel run in float32 under autocast.
            with torch.autocast(dev, enabled=False):
                y = self._heads(x.float())
        else:
            y = self._heads(x)
        return self.resid_dropout(self.c_proj(y))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer through the explicit pairwise path (``Omega_ij``, ``KL_ij`` materialised; no dropout):
        what the fused forward must equal (tests)."""
        return self.c_proj(self._heads(x, pairwise=True, dropout=False))

    def _heads(self, x: torch.Tensor, pairwise: bool | None = None, dropout: bool = True) -> torch.Tensor:
        """The concatenated head outputs ``m_i`` (B, T, W), before the output projection."""
        B, T, _ = x.shape
        pairwise = not self.opts.fused if pairwise is None else pairwise
        dropout = dropout and self.training and self.dropout > 0
        p = self.dropout if dropout else 0.0
        ys = []
        for (mu, sigma, R), inv_temp in zip(self.beliefs(x), self.inv_temps(), strict=True):
            if not pairwise:
                m = gauge_kl_attention(mu, sigma, R, inv_temp=inv_temp, diag=self.diag, dropout_p=p)
            else:
                drop = self.attn_dropout if dropout else None
                m = gauge_kl_attention_pairwise(mu, sigma, R, inv_temp=inv_temp, diag=self.diag, dropout=drop)
            ys.append(m.transpose(1, 2).reshape(B, T, -1))
        return torch.cat(ys, dim=-1)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, H, T, T) attention probabilities (heads in :meth:`head_labels` order), from q~ . k~."""
        return torch.cat(
            [
                gauge_kl_weights(mu, sigma, R, inv_temp=t, diag=self.diag, pairwise=not self.opts.fused)
                for (mu, sigma, R), t in zip(self.beliefs(x), self.inv_temps(), strict=True)
            ],
            dim=1,
        )

    def kl_matrices(self, x: torch.Tensor) -> torch.Tensor:
        """``KL(q_i || Omega_ij q_j)`` for every head, (B, H, T, T), including the masked j > i (diagnostics)."""
        return torch.cat([kl_matrix(mu, sigma, R, diag=self.diag) for mu, sigma, R in self.beliefs(x)], dim=1)

    def sdpa_floor(self, batch: int, seq: int, *, device=None, dtype=None) -> Callable[[], None]:
        """:func:`gauge_kl_sdpa_reference` for this layer's irrep_spec (device / dtype default to the layer's)."""
        ref = self.c_proj.weight
        return gauge_kl_sdpa_reference(
            batch, seq, self.opts.irrep_spec, device=device or ref.device, dtype=dtype or ref.dtype
        )

    # the explicit path holds ~15 (B, H, T, T, K, K)-sized tensors at its peak (Omega, transported Sigma, grads:
    # 1.06 GB at B=4, T=256 for the seed's spec; 3.3 GB and 34 s a call at T=512 on one CPU thread)
    PAIRWISE_BENCH_BYTES = 2 * 2**30
    BENCH_SOLO = ("pairwise",)  # timed on its own after the interleaved rounds (it would evict the others' caches)

    def bench_companions(self, x: torch.Tensor) -> dict[str, Callable[[], None]]:
        """Reference workloads for ``geoformer bench attention``, timed beside this layer on the same input:
        ``floor``, the SDPA calls the fused path reduces to (:meth:`sdpa_floor`), and ``pairwise``, this
        layer through the explicit pairwise path, left out when its ``T^2 K^2`` tensors would pass
        ``PAIRWISE_BENCH_BYTES`` (estimated as 16 such tensors)."""
        B, T, _ = x.shape
        out = {"floor": self.sdpa_floor(B, T, device=x.device, dtype=x.dtype)}
        est = 16 * B * T * T * sum(g.n_heads * g.K * g.K for g in self.groups) * x.element_size()
        if est <= self.PAIRWISE_BENCH_BYTES:

            def pairwise() -> None:
                self.zero_grad(set_to_none=True)
                x.grad = None
                self.reference(x).sum().backward()

            out["pairwise"] = pairwise
        return out

    def extra_repr(self) -> str:
        spec = ", ".join(f"l{g.l}x{g.n_heads}" for g in self.groups)
        return f"irreps=[{spec}], width={self.width}, cov={self.opts.cov}, frame={self.opts.frame}"


# ------------------------------------------------------------------------------------------ bench helpers
def augmented_head_dims(irrep_spec: Sequence | None = None) -> list[tuple[int, int, int]]:
    """``(n_heads, D, K)`` per irrep type: the fused SDPA calls run (B, n_heads, T, D) for q, k and v (v = q~)."""
    groups = parse_irrep_spec(list(irrep_spec) if irrep_spec is not None else list(SEED_IRREP_SPEC))
    return [(g.n_heads, g.aug_dim, g.K) for g in groups]


def gauge_kl_sdpa_reference(
    batch: int,
    seq: int,
    irrep_spec: Sequence | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], None]:
    """The physical limit of ``gauge_kl``: a closure running forward+backward of plain causal SDPA calls with the
    same head counts and augmented head dimensions ``D`` (one call per irrep type), nothing else.

    Time it like an attention module's ``module(x).sum().backward()`` (the closure zeroes its grads first);
    ``gauge_kl`` time / this time is how close the kind gets to the kernel it reduces to.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    leaves = []
    for h, D, _ in augmented_head_dims(irrep_spec):
        qkv = [
            torch.randn(batch, h, seq, D, generator=gen, dtype=dtype).to(device).requires_grad_(True)
            for _ in range(3)
        ]
        leaves.append(qkv)

    def run() -> None:
        total = 0.0
        for q, k, v in leaves:
            for t in (q, k, v):
                t.grad = None
            total = total + F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0).sum()
        total.backward()

    return run

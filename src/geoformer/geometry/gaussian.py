"""Gaussian beliefs: stable parametrisations and the closed-form KL divergence.

``N(mu, Sigma)`` in K dimensions, with ``Sigma`` either diagonal (a vector of variances) or full, given by a
lower-triangular Cholesky factor ``L`` (``Sigma = L L^T``, positive diagonal). The divergence is

    KL(N0 || N1) = 1/2 [ tr(Sigma1^{-1} Sigma0) + (mu1 - mu0)^T Sigma1^{-1} (mu1 - mu0) - K
                         + ln det Sigma1 - ln det Sigma0 ].

Numerical guards are written once, here: a variance floor by dtype (:func:`min_variance`) used by the
parametrisations, so ``Sigma^{-1}`` and ``ln det Sigma`` stay finite in every dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "min_variance",
    "positive_variance",
    "cholesky_factor",
    "n_cholesky_params",
    "logdet_from_cholesky",
    "kl_diag",
    "kl_full",
    "kl_full_cov",
]

# the variance floor: 1/floor bounds Sigma^{-1}, so the KL stays representable (and its gradient usable)
_MIN_VAR = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-3, torch.float16: 1e-3}
_SOFTPLUS_INV_1 = math.log(math.expm1(1.0))  # softplus(_SOFTPLUS_INV_1) = 1


def min_variance(dtype: torch.dtype) -> float:
    """The smallest variance the parametrisations produce in ``dtype`` (1e-10 f64, 1e-5 f32, 1e-3 half)."""
    return _MIN_VAR.get(dtype, 1e-5)


def positive_variance(raw: torch.Tensor, floor: float | None = None) -> torch.Tensor:
    """Variance from an unconstrained number: ``var = floor + softplus(raw + c)`` with ``c = softplus^{-1}(1 - floor)``.

    So ``raw = 0`` gives ``var = 1`` exactly (a standard-normal belief at zero pre-activation), ``var > floor``
    always, and ``var`` grows linearly (not exponentially) for large ``raw``: no overflow, no clamp that
    kills the gradient. ``floor`` defaults to :func:`min_variance` of the dtype.
    """
    floor = min_variance(raw.dtype) if floor is None else floor
    c = math.log(math.expm1(1.0 - floor)) if floor > 0 else _SOFTPLUS_INV_1
    return floor + F.softplus(raw + c)


def n_cholesky_params(K: int) -> int:
    """Unconstrained numbers per K x K Cholesky factor: ``K (K + 1) / 2``."""
    return K * (K + 1) // 2


def cholesky_factor(raw: torch.Tensor, K: int, floor: float | None = None) -> torch.Tensor:
    """Lower-triangular ``L`` (positive diagonal) from ``K (K + 1) / 2`` unconstrained numbers per factor.

    The first ``K`` numbers give the diagonal ``L_aa = sqrt(positive_variance(raw_a))`` (so ``raw = 0`` gives
    ``L = I``), the rest fill the strict lower triangle row by row. (..., K(K+1)/2) -> (..., K, K).
    """
    if raw.size(-1) != n_cholesky_params(K):
        raise ValueError(f"expected {n_cholesky_params(K)} numbers per {K}x{K} factor, got {raw.size(-1)}")
    diag = positive_variance(raw[..., :K], floor).sqrt()
    L = torch.diag_embed(diag)
    if K > 1:
        r, c = torch.tril_indices(K, K, offset=-1, device=raw.device)
        flat = torch.zeros(*raw.shape[:-1], K * K, dtype=raw.dtype, device=raw.device)
        flat = flat.index_copy(-1, r * K + c, raw[..., K:])  # out of place: autograd-friendly
        L = L + flat.unflatten(-1, (K, K))
    return L


def logdet_from_cholesky(L: torch.Tensor) -> torch.Tensor:
    """``ln det (L L^T) = 2 sum_a ln L_aa``; (..., K, K) -> (...)."""
    return 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def kl_diag(mu0: torch.Tensor, var0: torch.Tensor, mu1: torch.Tensor, var1: torch.Tensor) -> torch.Tensor:
    """KL between diagonal Gaussians, summed over the last dimension:

    ``1/2 sum_a [ var0_a / var1_a + (mu1_a - mu0_a)^2 / var1_a - 1 + ln var1_a - ln var0_a ]``.
    """
    return 0.5 * (var0 / var1 + (mu1 - mu0).square() / var1 - 1 + var1.log() - var0.log()).sum(-1)


def kl_full(mu0: torch.Tensor, L0: torch.Tensor, mu1: torch.Tensor, L1: torch.Tensor) -> torch.Tensor:
    """KL between full Gaussians given Cholesky factors (``Sigma = L L^T``):

    ``1/2 [ ||L1^{-1} L0||_F^2 + ||L1^{-1} (mu1 - mu0)||^2 - K + 2 sum ln diag L1 - 2 sum ln diag L0 ]``
    (triangular solves only, no explicit inverse). mu: (..., K), L: (..., K, K) -> (...).
    """
    K = mu0.size(-1)
    M = torch.linalg.solve_triangular(L1, L0, upper=False)
    y = torch.linalg.solve_triangular(L1, (mu1 - mu0).unsqueeze(-1), upper=False).squeeze(-1)
    return 0.5 * (
        M.square().sum((-2, -1))
        + y.square().sum(-1)
        - K
        + logdet_from_cholesky(L1)
        - logdet_from_cholesky(L0)
    )


def kl_full_cov(mu0: torch.Tensor, cov0: torch.Tensor, mu1: torch.Tensor, cov1: torch.Tensor) -> torch.Tensor:
    """:func:`kl_full` from covariance matrices (symmetric positive definite; Cholesky-factorised here)."""
    return kl_full(mu0, torch.linalg.cholesky(cov0), mu1, torch.linalg.cholesky(cov1))

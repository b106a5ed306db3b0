r"""Information geometry of categorical distributions and of pure quantum states: pure functions.

**Categorical (Fisher-Rao).** On the simplex :math:`\Delta^{n-1}` the Fisher information metric is
:math:`g_p(u, v) = \sum_k u_k v_k / p_k` (tangent vectors with :math:`\sum_k u_k = 0`). The map
:math:`p \mapsto 2\sqrt{p}` is an isometry onto the positive orthant of the sphere of radius 2, so the
geodesic distance is twice the great-circle angle between :math:`\sqrt p` and :math:`\sqrt q`:

.. math::

    d_{FR}(p, q) = 2 \arccos \mathrm{BC}(p, q), \qquad \mathrm{BC}(p, q) = \sum_k \sqrt{p_k q_k}
                 = 4 \arcsin\big(\tfrac12 \|\sqrt p - \sqrt q\|\big),

with BC the Bhattacharyya coefficient. The arcsin form is the one computed: ``arccos`` has an infinite
derivative at BC = 1 (identical distributions) and loses half the digits there, while
:math:`\|\sqrt p - \sqrt q\| \le \sqrt 2` keeps arcsin on [0, pi/4] where it is well conditioned.

**Pure quantum states (Fubini-Study).** A unit vector :math:`\psi \in \mathbb{C}^n`, stored as real and
imaginary parts, has fidelity :math:`F(\psi, \phi) = |\langle\psi|\phi\rangle|^2` with another state; it
is the quantum analogue of :math:`\mathrm{BC}^2` (for real non-negative amplitudes it is exactly that),
and the Fubini-Study distance is :math:`\arccos\sqrt F`. Two real matmuls give it:

.. math::

    \langle a|b\rangle = (a_r\cdot b_r + a_i\cdot b_i) + i\,(a_r\cdot b_i - a_i\cdot b_r),
    \qquad F = \mathrm{Re}^2 + \mathrm{Im}^2.

It is also a dot product of density matrices, :math:`F = \operatorname{tr}(\rho_a\rho_b)` with
:math:`\rho = |\psi\rangle\langle\psi|`; :func:`fidelity_features` writes :math:`\rho` as :math:`n^2` real
numbers (the diagonal, and :math:`\sqrt2\,\mathrm{Re}`, :math:`\sqrt2\,\mathrm{Im}` of the upper triangle)
so that ``phi(a) @ phi(b).T`` is the fidelity matrix -- a feature map a fused SDPA kernel can consume.
"""

from __future__ import annotations

import math

import torch

_TINY = 1e-15


# ------------------------------------------------------------------------------------------ categorical
def sqrt_categorical(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":math:`\sqrt{\operatorname{softmax}(\ell)} = \exp(\tfrac12 \log\operatorname{softmax}(\ell))`: a unit vector
    with non-negative entries (no square root of a probability, so no infinite gradient at p = 0)."""
    return torch.exp(0.5 * torch.log_softmax(logits, dim=dim))


def fisher_metric(p: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""The Fisher information metric of the categorical family, :math:`g_p(u, v) = \sum_k u_k v_k / p_k`."""
    return (u * v / p.clamp_min(_TINY)).sum(-1)


def fisher_rao(sp: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    r""":math:`d_{FR} = 4\arcsin(\|\sqrt p - \sqrt q\| / 2)` of broadcast pairs, from square-root vectors
    ``sp = sqrt(p)``, ``sq = sqrt(q)`` (..., n) -> (...)."""
    return 4 * torch.asin((sp - sq).norm(dim=-1).mul(0.5).clamp(max=1.0))


def pairwise_fisher_rao(sp: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    r"""All Fisher-Rao distances between ``sp`` (..., T, n) and ``sq`` (..., S, n) (square-root vectors):
    (..., T, S). ``cdist`` in direct mode gives ``||sqrt p - sqrt q||`` without the cancellation of
    ``2 - 2 BC``, so identical distributions are exactly 0 apart, with a finite gradient."""
    diff = torch.cdist(sp, sq, compute_mode="donot_use_mm_for_euclid_dist")
    return 4 * torch.asin(diff * 0.5)  # diff <= sqrt(2) for non-negative unit vectors: no clamp needed


def bhattacharyya(sp: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    r"""All Bhattacharyya coefficients :math:`\mathrm{BC}_{ts} = \sqrt{p_t}\cdot\sqrt{q_s}`: (..., T, S)."""
    return sp @ sq.transpose(-2, -1)


# ---------------------------------------------------------------------------------------- quantum states
def normalize_state(re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\psi / \|\psi\|` for :math:`\psi = re + i\,im` (..., n); the zero vector stays zero (norm clamped)."""
    n = (re.pow(2).sum(-1, keepdim=True) + im.pow(2).sum(-1, keepdim=True)).clamp_min(_TINY**2).sqrt()
    return re / n, im / n


def overlap(a_re, a_im, b_re, b_im) -> tuple[torch.Tensor, torch.Tensor]:
    r"""All inner products :math:`\langle a_t|b_s\rangle` as (real, imaginary) parts, (..., T, S) each."""
    bt_re, bt_im = b_re.transpose(-2, -1), b_im.transpose(-2, -1)
    real = a_re @ bt_re + a_im @ bt_im
    imag = a_re @ bt_im - a_im @ bt_re
    return real, imag


def fidelity(a_re, a_im, b_re, b_im) -> torch.Tensor:
    r"""All fidelities :math:`F_{ts} = |\langle a_t|b_s\rangle|^2` of unit states: (..., T, S) in [0, 1]."""
    real, imag = overlap(a_re, a_im, b_re, b_im)
    return real.pow(2) + imag.pow(2)


def fidelity_features(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    r"""Real features of :math:`\rho = |\psi\rangle\langle\psi|`, (..., n) -> (..., n^2), with
    :math:`\phi(a)\cdot\phi(b) = \operatorname{tr}(\rho_a\rho_b) = |\langle a|b\rangle|^2`.

    :math:`\rho_{kl} = \psi_k\bar\psi_l`; the Hermitian :math:`\rho` is determined by its diagonal
    :math:`|\psi_k|^2` and the upper triangle, whose real and imaginary parts enter
    :math:`\operatorname{tr}(\rho_a\rho_b) = \sum_{kl}\overline{\rho_{a,kl}}\rho_{b,kl}` twice, hence the
    :math:`\sqrt2`. The mean of features is the feature of the mixed state :math:`\bar\rho`, so
    :math:`\phi(a)\cdot\overline{\phi} = \langle a|\bar\rho|a\rangle` is the mean fidelity to a set of states.
    """
    n = re.size(-1)
    rr = re.unsqueeze(-1) * re.unsqueeze(-2) + im.unsqueeze(-1) * im.unsqueeze(-2)  # Re rho (..., n, n)
    ri = im.unsqueeze(-1) * re.unsqueeze(-2) - re.unsqueeze(-1) * im.unsqueeze(-2)  # Im rho
    iu = torch.triu_indices(n, n, offset=1, device=re.device)
    diag = rr.diagonal(dim1=-2, dim2=-1)
    s2 = math.sqrt(2.0)
    return torch.cat([diag, s2 * rr[..., iu[0], iu[1]], s2 * ri[..., iu[0], iu[1]]], dim=-1)


__all__ = [
    "bhattacharyya",
    "fidelity",
    "fidelity_features",
    "fisher_metric",
    "fisher_rao",
    "normalize_state",
    "overlap",
    "pairwise_fisher_rao",
    "sqrt_categorical",
]

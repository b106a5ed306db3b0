"""Real irreducible representations of SO(3) and the maps between the group, its algebra and the irreps.

Conventions (those of e3nn 0.6, checked in ``tests/test_so3.py``):

- A frame / group element is a vector ``phi`` in R^3 = so(3) (axis times angle). Its matrix in the
  spin-l irrep (dimension ``K = 2l + 1``, e3nn's real "tesseral" basis) is
  ``D^l(phi) = expm(sum_a phi_a G^l_a)``.
- The generators ``G^l_a`` (``a = x, y, z``) are real and skew, ``[G_x, G_y] = G_z`` (cyclic), and the
  Casimir is ``-sum_a G_a G_a = l(l + 1) I``. ``l = 0`` has the zero generators (``D^0 = [[1]]``).
- For ``l = 1`` the generators are the Cartesian ``(G_a)_bc = -eps_abc``, so ``D^1(phi)`` is the usual
  Rodrigues rotation about ``phi / |phi|`` by ``|phi|``, and ``D^l(phi)`` equals
  ``e3nn.o3.Irrep(l, 1).D_from_axis_angle(phi / |phi|, |phi|)``.

``D^l`` is computed in closed form (Rodrigues for l = 1, then the Clebsch-Gordan recursion with e3nn's
``wigner_3j``; see :func:`exp_maps`), equal to ``matrix_exp`` of the generators to rounding but an order of
magnitude cheaper on batches of small matrices, and differentiable at ``phi = 0``.

Everything here is a pure function of tensors with leading batch dimensions; nothing holds state except
small caches of e3nn's float64 generators and coupling coefficients.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = [
    "irrep_dim",
    "generators",
    "hat",
    "exp_map",
    "exp_maps",
    "exp_map_reference",
    "log_map",
    "compose",
    "adjoint",
    "transport",
]


def irrep_dim(l: int) -> int:
    """``K = 2l + 1``, the dimension of the spin-l irrep."""
    return 2 * l + 1


@functools.lru_cache(maxsize=32)
def _generators_f64(l: int) -> torch.Tensor:
    from e3nn.o3 import so3_generators  # lazy: importing e3nn pulls in torch._dynamo (seconds)

    # e3nn builds the generators in the *default* dtype; under float32 they are off by ~1e-7, which would
    # break float64 identities (D(g1 g2) = D(g1) D(g2) to 1e-12), so build them in float64.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        G = so3_generators(l).to(torch.float64).contiguous()
    finally:
        torch.set_default_dtype(old)
    G = torch.where(G.abs() < 1e-14, torch.zeros_like(G), G)  # exact zeros where e3nn leaves rounding noise
    G.requires_grad_(False)
    return G


def generators(
    l: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The three real generators ``G^l_a`` of the spin-l irrep, shape (3, K, K), ``K = 2l + 1``.

    ``G_a^T = -G_a``, ``[G_x, G_y] = G_z`` (cyclic), ``-sum_a G_a^2 = l(l+1) I``. Taken from
    ``e3nn.o3.so3_generators(l)`` (computed in float64, then cast).
    """
    if not isinstance(l, int) or l < 0:
        raise ValueError(f"l must be a non-negative int, got {l!r}")
    return _generators_f64(l).to(dtype=dtype or torch.get_default_dtype(), device=device)


def hat(phi: torch.Tensor, l: int) -> torch.Tensor:
    """The algebra element in the spin-l irrep: ``hat(phi) = sum_a phi_a G^l_a``, (..., 3) -> (..., K, K)."""
    G = generators(l, phi.dtype, phi.device)
    return torch.einsum("...a,akm->...km", phi, G)


@functools.lru_cache(maxsize=32)
def _coupling_f64(l: int) -> torch.Tensor:
    """``C = e3nn.o3.wigner_3j(l-1, 1, l)`` reshaped to (3(2l-1), 2l+1) (e3nn builds it in float64)."""
    from e3nn.o3 import wigner_3j

    C = wigner_3j(l - 1, 1, l, dtype=torch.float64).reshape(-1, 2 * l + 1)
    return C


# below this l the recursion step is one matmul with the bilinear form W_l (its (3 K0^2, K^2) size grows as l^4)
_BILINEAR_MAX_L = 3


@functools.lru_cache(maxsize=64)
def _coupling(l: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_coupling_f64` cast once per dtype and device."""
    return _coupling_f64(l).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _bilinear(l: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``W[(i, i'), (j, j'), (k, n)] = (2l+1) C[(i, j), k] C[(i', j'), n]``, (9 K0^2, K^2): the recursion step
    ``D^l = (2l+1) C^T (D^{l-1} (x) D^1) C`` as ``vec(D^l) = (vec D^{l-1} (x) vec D^1) W`` (built in float64)."""
    K0, K = 2 * l - 1, 2 * l + 1
    C = _coupling_f64(l).view(K0, 3, K)
    W = (2 * l + 1) * torch.einsum("ijk,lmn->iljmkn", C, C)
    return W.reshape(9 * K0 * K0, K * K).to(dtype=dtype, device=device)


def _couple(D: torch.Tensor, D1: torch.Tensor, l: int) -> torch.Tensor:
    """``D^l = (2l+1) C^T (D^{l-1} (x) D^1) C`` on batches of (K0, K0) and (3, 3) matrices, as few large matmuls
    (the batch folded into their rows; per-token (K, K) matmuls are slow on CPU): for ``l <= 3`` one product
    with :func:`_bilinear`, above it three steps that never form the (3 K0)^2 Kronecker product."""
    K0, K = 2 * l - 1, 2 * l + 1
    batch = D.shape[:-2]
    if l <= _BILINEAR_MAX_L:
        outer = (D.reshape(-1, K0 * K0, 1) * D1.reshape(-1, 1, 9)).reshape(-1, 9 * K0 * K0)
        return (outer @ _bilinear(l, D.dtype, D.device)).view(*batch, K, K)
    C = _coupling(l, D.dtype, D.device)  # (3 K0, K), rows (i, j)
    Y = (D.reshape(-1, K0) @ C.reshape(K0, 3 * K)).view(-1, K0, 3, K)  # Y[i, m, n] = D_il C[(l, m), n]
    Z = D1.reshape(-1, 3, 3) @ Y.transpose(1, 2).reshape(-1, 3, K0 * K)  # Z[j, (i, n)] = D1_jm Y[i, m, n]
    Z = Z.view(-1, 3, K0, K).permute(0, 3, 2, 1).reshape(-1, K0 * 3)  # rows (token, n), columns (i, j)
    return (2 * l + 1) * (Z @ C).view(*batch, K, K).transpose(-1, -2)


def exp_map_reference(phi: torch.Tensor, l: int) -> torch.Tensor:
    """The definition ``D^l(phi) = expm(sum_a phi_a G^l_a)`` via ``torch.linalg.matrix_exp`` (slow on batches of small
    matrices, and its backward exponentiates a 2K x 2K matrix); :func:`exp_map` computes the same matrix."""
    if l == 0:
        return torch.ones(*phi.shape[:-1], 1, 1, dtype=phi.dtype, device=phi.device)
    return torch.linalg.matrix_exp(hat(phi, l))


def exp_maps(phi: torch.Tensor, ls: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{l: D^l(phi)}`` for every ``l`` in ``ls``, sharing the work; (..., 3) -> (..., 2l+1, 2l+1) each.

    - ``l = 0``: ``[[1]]``.
    - ``l = 1``: Rodrigues, ``D^1 = I + (sin t / t) X + ((1 - cos t) / t^2) X^2`` with ``X = hat(phi, 1)``,
      ``t = |phi|`` (exact since ``X^3 = -t^2 X``); the coefficients are written as ``sinc(t)`` and
      ``sinc(t/2)^2 / 2`` so nothing cancels at small ``t``.
    - ``l >= 2``: the Clebsch-Gordan recursion ``D^l = (2l+1) C^T (D^{l-1} (x) D^1) C`` with
      ``C = wigner_3j(l-1, 1, l)`` (e3nn, float64): it follows from the invariance
      ``C_{lmn} = C_{ijk} D^{l-1}_{il} D^1_{jm} D^l_{kn}`` and ``C_{ijk} C_{ijn} = delta_kn / (2l+1)``.

    Equal to :func:`exp_map_reference` to rounding (tested in float64), and differentiable everywhere
    (``phi = 0`` included).
    """
    out: dict[int, torch.Tensor] = {}
    top = max(ls)
    if 0 in ls:
        out[0] = torch.ones(*phi.shape[:-1], 1, 1, dtype=phi.dtype, device=phi.device)
    if top < 1:
        return out
    sq = phi.square().sum(-1)
    nz = sq > 0
    t = torch.sqrt(torch.where(nz, sq, torch.ones_like(sq)))  # a safe sqrt: no inf gradient at phi = 0
    a = torch.where(nz, torch.sinc(t / math.pi), torch.ones_like(t))  # sin t / t
    b = torch.where(
        nz, 0.5 * torch.sinc(t / (2 * math.pi)).square(), torch.full_like(t, 0.5)
    )  # (1-cos t)/t^2
    X = hat(phi, 1)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device)
    XX = phi[..., :, None] * phi[..., None, :] - sq[..., None, None] * eye  # X^2 = phi phi^T - |phi|^2 I
    D1 = eye + a[..., None, None] * X + b[..., None, None] * XX
    D = D1
    for l in range(1, top + 1):
        if l > 1:
            D = _couple(D, D1, l)
        if l in ls:
            out[l] = D
    return out


def exp_map(phi: torch.Tensor, l: int) -> torch.Tensor:
    """``D^l(phi) = expm(sum_a phi_a G^l_a)``, an orthogonal (K, K) matrix with det 1; (..., 3) -> (..., K, K).

    ``exp_map(phi, 1)`` is the Cartesian rotation by angle ``|phi|`` about ``phi / |phi|``. Computed in closed
    form (see :func:`exp_maps`), not with ``matrix_exp``.
    """
    if not isinstance(l, int) or l < 0:
        raise ValueError(f"l must be a non-negative int, got {l!r}")
    return exp_maps(phi, [l])[l]


def log_map(R: torch.Tensor) -> torch.Tensor:
    """Inverse of ``exp_map(., 1)`` on 3x3 rotations, accurate up to and at theta = pi. (..., 3, 3) -> (..., 3).

    With ``w = vee(R - R^T) = 2 sin(theta) n`` and ``cos(theta) = (tr R - 1) / 2``, ``theta = atan2(|w| / 2, cos)``
    (well conditioned at every angle, unlike ``arccos``). Below pi/2: ``phi = theta / (2 sin theta) w``, with the
    series ``1/2 + theta^2/12`` near 0. From pi/2 on ``w`` carries ever less of the axis (it vanishes at pi, so
    dividing by ``sin theta`` would amplify rounding by ``1 / (pi - theta)``); the axis is then read off the
    symmetric part, ``(R + R^T)/2 - cos(theta) I = (1 - cos theta) n n^T`` (its largest column, sign taken from
    ``w``), whose conditioning is ``1 / (1 - cos theta) <= 1``. At exactly pi the sign of n is arbitrary, as is
    the logarithm's (theta n and -theta n are the same rotation).
    """
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    w = torch.stack(
        (R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]), -1
    )
    theta = torch.atan2(w.norm(dim=-1) / 2, cos)
    # below pi/2: the skew part
    small = theta < 1e-4
    safe = torch.where(small | (theta > 1.5), torch.ones_like(theta), theta)
    factor = torch.where(small, 0.5 + theta**2 / 12, safe / (2 * torch.sin(safe)))
    phi_low = factor[..., None] * w
    # from pi/2: the symmetric part
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    B = (R + R.transpose(-1, -2)) / 2 - cos[..., None, None] * eye
    k = B.diagonal(dim1=-2, dim2=-1).argmax(-1)
    col = torch.take_along_dim(B, k[..., None, None].expand(*B.shape[:-1], 1), dim=-1)[..., 0]  # B[..., :, k]
    n = col / col.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
    sign = torch.where((n * w).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(R.dtype)
    phi_high = theta[..., None] * sign * n
    return torch.where((theta > 1.5)[..., None], phi_high, phi_low)


def compose(phi1: torch.Tensor, phi2: torch.Tensor) -> torch.Tensor:
    """The frame of the product: ``exp(phi) = exp(phi1) exp(phi2)``, computed in the l = 1 irrep.

    Returns the principal logarithm (angle < pi); then ``D^l(phi) = D^l(phi1) D^l(phi2)`` for every l.
    """
    return log_map(exp_map(phi1, 1) @ exp_map(phi2, 1))


def adjoint(g: torch.Tensor, l: int = 1) -> torch.Tensor:
    """The adjoint action ``Ad_g`` on so(3) = R^3, computed in the spin-l irrep by projection.

    ``rho G_a rho^T = sum_b (Ad_g)_{ba} G_b`` with ``rho = D^l(g)``, so
    ``(Ad_g)_{ba} = sum_c (Gram^{-1})_{bc} <G_c, rho G_a rho^T>_F``, ``Gram_{bc} = <G_b, G_c>_F``.
    Then ``exp_map(Ad_g phi, l) = rho exp_map(phi, l) rho^T``. The result does not depend on ``l >= 1``
    (it is the l = 1 matrix in e3nn's Cartesian basis; in other bases it is a permuted copy, which is why
    it is computed by projection rather than assumed). (..., 3) -> (..., 3, 3).
    """
    if l < 1:
        raise ValueError("the adjoint action is not visible in the trivial irrep (l = 0); use l >= 1")
    G = generators(l, g.dtype, g.device)
    rho = exp_map(g, l)
    conj = rho[..., None, :, :] @ G @ rho[..., None, :, :].transpose(-1, -2)  # (..., 3, K, K), index a
    inner = torch.einsum("ckm,...akm->...ca", G, conj)  # <G_c, rho G_a rho^T>
    gram = torch.einsum("bkm,ckm->bc", G, G)
    return torch.linalg.solve(gram, inner)


def transport(phi_i: torch.Tensor, phi_j: torch.Tensor, l: int) -> torch.Tensor:
    """Parallel transport from frame j to frame i in the spin-l irrep: ``Omega_ij = D^l(phi_i) D^l(phi_j)^T``.

    ``Omega_ii = I``, ``Omega_ij Omega_jk = Omega_ik``, orthogonal with det 1. (..., 3) x (..., 3) -> (..., K, K).
    """
    return exp_map(phi_i, l) @ exp_map(phi_j, l).transpose(-1, -2)

"""How exact is a chain of linear maps C_0 -d_0-> C_1 -d_1-> ... -> C_n?

Pure functions on matrices (``d_k`` as an (dim C_{k+1}, dim C_k) tensor, the ``nn.Linear.weight``
layout). Ranks are numerical: singular values above ``rtol * sigma_max`` (plus a dtype floor) count.

* ``complex_defect``: ||d_{k+1} d_k||_F / (||d_{k+1}||_2 ||d_k||_F), 0 iff d_{k+1} d_k = 0.
* ``composite_ratio``: sqrt(n) ||d_{k+1} d_k||_F / (||d_{k+1}||_F ||d_k||_F), n = dim C_{k+1}: the composite
  against what unrelated maps give (about 1 for independent random maps, 0 iff d_{k+1} d_k = 0). Unlike
  ``complex_defect`` and the trained penalty it cannot be lowered by inflating one singular value of d_{k+1}:
  only by aligning d_{k+1}'s rows with the kernel directions of im d_k.
* ``cohomology_dims``: at each C_i, dim ker d_i - rank d_{i-1} (missing maps are zero maps). For a
  cochain complex this is the Betti number dim H^i; 0 everywhere means the sequence is exact. A
  negative value means im d_{i-1} is not inside ker d_i (not a complex at C_i).
* ``subspace_match``: ||P_im d_{i-1} P_ker d_i||_F^2 / max(rank, nullity) in [0, 1]; 1 iff
  im d_{i-1} = ker d_i (exactness at C_i, the full condition the penalty only half-enforces).
* ``hodge_min_eig``: smallest eigenvalue of the Hodge Laplacian d_{i-1} d_{i-1}^T + d_i^T d_i; for a
  complex it is > 0 iff H^i = 0 (finite-dimensional Hodge theorem).

A cellular sheaf on a graph (as in Neural Sheaf Diffusion, Bodnar et al. 2022) is the same algebra
with structure: ``sheaf_coboundary`` builds delta : C^0 -> C^1 from restriction maps, (delta x)_e =
F_{v<e} x_v - F_{u<e} x_u for e = (u, v); ``sheaf_laplacian`` is delta^T delta and H^0 = ker delta
(the global sections) is measured with ``cohomology_dims([delta])[0]``.
"""

from __future__ import annotations

import torch


def _tol(s: torch.Tensor, shape: tuple[int, ...], rtol: float | None) -> float:
    top = float(s.max()) if s.numel() else 0.0
    if rtol is None:
        rtol = max(shape) * torch.finfo(s.dtype).eps
    return max(rtol * top, torch.finfo(s.dtype).tiny)


def numerical_rank(a: torch.Tensor, rtol: float | None = None) -> int:
    """Number of singular values of ``a`` above ``rtol * sigma_max`` (default: max(shape) * eps)."""
    if a.numel() == 0:
        return 0
    s = torch.linalg.svdvals(a.detach().double())
    return int((s > _tol(s, tuple(a.shape), rtol)).sum())


def image_basis(a: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal columns spanning the numerical image (column space) of ``a``."""
    a = a.detach().double()
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    return u[:, s > _tol(s, tuple(a.shape), rtol)]


def kernel_basis(a: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal columns spanning the numerical kernel (null space) of ``a``."""
    a = a.detach().double()
    _, s, vh = torch.linalg.svd(a, full_matrices=True)
    r = int((s > _tol(s, tuple(a.shape), rtol)).sum())
    return vh[r:].T


def complex_defect(d0: torch.Tensor, d1: torch.Tensor) -> float:
    """||d1 d0||_F / (||d1||_2 ||d0||_F): scale-free distance from d1 d0 = 0, in [0, 1]."""
    d0, d1 = d0.detach().double(), d1.detach().double()
    den = float(torch.linalg.matrix_norm(d1, ord=2)) * float(d0.norm())
    return float((d1 @ d0).norm()) / den if den > 0 else 0.0


def composite_ratio(d0: torch.Tensor, d1: torch.Tensor) -> float:
    """sqrt(n) ||d1 d0||_F / (||d1||_F ||d0||_F), n = d0's output dimension (see the module docstring)."""
    d0, d1 = d0.detach().double(), d1.detach().double()
    den = float(d1.norm()) * float(d0.norm())
    return float((d1 @ d0).norm()) * d0.shape[0] ** 0.5 / den if den > 0 else 0.0


def _maps_around(maps: list[torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_{i-1}, d_i) at C_i, with zero maps from 0 / to 0 at the ends."""
    dims = [maps[0].shape[1]] + [m.shape[0] for m in maps]
    d_in = maps[i - 1].double() if i > 0 else torch.zeros(dims[0], 0, dtype=torch.float64)
    d_out = maps[i].double() if i < len(maps) else torch.zeros(0, dims[-1], dtype=torch.float64)
    return d_in.detach(), d_out.detach()


def cohomology_dims(maps: list[torch.Tensor], rtol: float | None = None) -> list[int]:
    """dim ker d_i - rank d_{i-1} at every C_i, i = 0..n (Betti numbers when the maps form a complex)."""
    out = []
    for i in range(len(maps) + 1):
        d_in, d_out = _maps_around(maps, i)
        nullity = d_out.shape[1] - numerical_rank(d_out, rtol)
        out.append(nullity - numerical_rank(d_in, rtol))
    return out


def subspace_match(d_in: torch.Tensor, d_out: torch.Tensor, rtol: float | None = None) -> float:
    """||U^T K||_F^2 / max(dim U, dim K) for orthonormal bases U of im d_in and K of ker d_out.

    1 iff the two subspaces coincide (exactness at the middle space); 1 also when both are {0}.
    """
    u, k = image_basis(d_in, rtol), kernel_basis(d_out, rtol)
    m = max(u.shape[1], k.shape[1])
    if m == 0:
        return 1.0
    return float((u.T @ k).square().sum()) / m


def hodge_min_eig(d_in: torch.Tensor, d_out: torch.Tensor) -> float:
    """Smallest eigenvalue of d_in d_in^T + d_out^T d_out (the Hodge Laplacian at the middle space)."""
    d_in, d_out = d_in.detach().double(), d_out.detach().double()
    lap = d_in @ d_in.T + d_out.T @ d_out
    return float(torch.linalg.eigvalsh(lap)[0])


def exactness_report(maps: list[torch.Tensor], rtol: float = 0.05) -> dict:
    """Every measure above for a chain of maps (``rtol`` 5%: singular values under 5% of the top are 0)."""
    interior = range(1, len(maps))
    return {
        "ranks": [numerical_rank(m, rtol) for m in maps],
        "cohomology_dims": cohomology_dims(maps, rtol),
        "complex_defect": [complex_defect(a, b) for a, b in zip(maps[:-1], maps[1:], strict=True)],
        "composite_ratio": [composite_ratio(a, b) for a, b in zip(maps[:-1], maps[1:], strict=True)],
        "subspace_match": [subspace_match(maps[i - 1], maps[i], rtol) for i in interior],
        "rtol": rtol,
    }


def sheaf_coboundary(n_nodes: int, edges: list[tuple[int, int]], restrictions: torch.Tensor) -> torch.Tensor:
    """delta (|E| d_e x |V| d_v) of a cellular sheaf on a graph: (delta x)_e = F_{v<e} x_v - F_{u<e} x_u.

    ``restrictions``: (|E|, 2, d_e, d_v), [e, 0] = F_{u<e} (the tail u), [e, 1] = F_{v<e} (the head v).
    """
    E, two, de, dv = restrictions.shape
    if two != 2 or E != len(edges):
        raise ValueError("restrictions must be (len(edges), 2, d_edge, d_node)")
    delta = restrictions.new_zeros(E * de, n_nodes * dv)
    for i, (u, v) in enumerate(edges):
        delta[i * de : (i + 1) * de, u * dv : (u + 1) * dv] -= restrictions[i, 0]
        delta[i * de : (i + 1) * de, v * dv : (v + 1) * dv] += restrictions[i, 1]
    return delta


def sheaf_laplacian(n_nodes: int, edges: list[tuple[int, int]], restrictions: torch.Tensor) -> torch.Tensor:
    """L_F = delta^T delta (|V| d_v square, symmetric positive semi-definite; ker L_F = H^0)."""
    d = sheaf_coboundary(n_nodes, edges, restrictions)
    return d.T @ d


__all__ = [
    "sheaf_coboundary",
    "sheaf_laplacian",
    "numerical_rank",
    "image_basis",
    "kernel_basis",
    "complex_defect",
    "composite_ratio",
    "cohomology_dims",
    "subspace_match",
    "hodge_min_eig",
    "exactness_report",
]

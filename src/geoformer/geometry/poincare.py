r"""The Poincaré ball of curvature :math:`-c` (``c > 0``): pure functions, a thin layer over geoopt.

Points live in :math:`\mathbb{D}^n_c = \{x : c\|x\|^2 < 1\}`. geoopt parametrises the ball by the
sectional curvature :math:`\kappa = -c`; this layer takes the positive ``c`` and passes ``k = -c`` to
:mod:`geoopt.manifolds.stereographic.math` for the Möbius addition, the conformal factor and the rim
projection, and the tests check every other function against geoopt's own to 1e-10 in float64.

One deliberate departure: the maps that need :math:`\operatorname{artanh}` (:func:`logmap0`, :func:`logmap`,
:func:`dist`, :func:`mobius_scalar_mul`) use ``torch.atanh`` on the same formula instead of geoopt's
``artanh``, which is ``(log(1 + z) - log(1 - z)) / 2`` clamped at ``1 - 1e-7``: for small ``z`` the two logs
cancel (relative error about ``eps / z``), which we measured as a 2.6% relative error of the float32
round trip ``exp0(log0(x))`` at ``|x| = 1e-6`` (5e-11 in float64). With ``torch.atanh`` the same round
trip is exact to a few ulps at every radius.

What the layer adds:

* guards: every point handed back is strictly inside the ball (:func:`project` after the maps that can
  reach the rim in floating point: ``tanh`` rounds to 1 in float32 from an argument of about 9);
* :func:`pairwise_dist` -- all distances between two point sets, (..., T, D) x (..., S, D) -> (..., T, S),
  from one ``cdist`` instead of a (T, S, D) tensor of Möbius sums;
* :func:`gyromidpoint` -- the weighted Möbius gyromidpoint of S points for each of T weight rows, two
  matmuls instead of a (T, S, D) broadcast.

Shapes: ``c`` is a float or a tensor that broadcasts against ``x[..., :1]`` (e.g. ``(H, 1, 1)`` for one
curvature per head of (B, H, T, D) inputs). Guards are by dtype (:func:`ball_eps`): float32 keeps points
within ``(1 - 4e-3) / sqrt(c)`` of the origin, float64 within ``(1 - 1e-5) / sqrt(c)`` (geoopt's choice),
so ``1 - c |x|^2`` and the conformal factor stay finite. Round trips through a base point ``x`` are
conditioned like :math:`(\lambda^c_x)^2`: near the rim no floating-point format keeps them to 1e-6.
"""

from __future__ import annotations

import torch


def _gmath():
    """geoopt's stereographic math, imported on first use: geoopt imports scipy (about 50 MiB of resident memory
    and 300 modules), which every model that never touches the ball, sdpa included, would otherwise pay."""
    from geoopt.manifolds.stereographic import math as gmath

    return gmath


_TINY = 1e-15  # norms and denominators are clamped here, as in geoopt


def ball_eps(dtype: torch.dtype) -> float:
    """Relative margin kept from the rim: points satisfy ``sqrt(c) |x| <= 1 - ball_eps``."""
    return 1e-5 if dtype == torch.float64 else 4e-3


def _curv(c, like: torch.Tensor) -> torch.Tensor:
    """``c`` as a tensor of ``like``'s dtype and device; a non-positive float is a ValueError."""
    if not torch.is_tensor(c):
        if not c > 0:
            raise ValueError(f"the curvature parameter c must be > 0, got {c}")
        return torch.tensor(float(c), dtype=like.dtype, device=like.device)
    return c.to(dtype=like.dtype, device=like.device).clamp_min(_TINY)


def project(x: torch.Tensor, c, eps: float | None = None) -> torch.Tensor:
    r"""Radially pull points with :math:`\sqrt{c}\|x\| > 1 - \epsilon` back onto that sphere (others unchanged)."""
    k = -_curv(c, x)
    return _gmath().project(x, k=k, eps=ball_eps(x.dtype) if eps is None else eps)


def lambda_x(x: torch.Tensor, c, keepdim: bool = False) -> torch.Tensor:
    r"""Conformal factor :math:`\lambda^c_x = 2 / (1 - c\|x\|^2)`."""
    return _gmath().lambda_x(x, k=-_curv(c, x), keepdim=keepdim)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c) -> torch.Tensor:
    r""":math:`x \oplus_c y = \frac{(1 + 2c\langle x,y\rangle + c\|y\|^2)x + (1 - c\|x\|^2)y}
    {1 + 2c\langle x,y\rangle + c^2\|x\|^2\|y\|^2}`."""
    return _gmath().mobius_add(x, y, k=-_curv(c, x))


def _atanh(z: torch.Tensor) -> torch.Tensor:
    """``artanh`` of ``z`` in [0, 1), clamped one ulp below 1 (arguments come from projected points)."""
    return torch.atanh(z.clamp(max=1 - torch.finfo(z.dtype).eps))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def mobius_scalar_mul(r, x: torch.Tensor, c) -> torch.Tensor:
    r""":math:`r \otimes_c x = \tanh(r\,\operatorname{artanh}(\sqrt{c}\|x\|))\, x / (\sqrt{c}\|x\|)`, projected."""
    sc = _curv(c, x).sqrt()
    n = _norm(x)
    return project(torch.tanh(r * _atanh(sc * n)) * x / (sc * n), c)


def expmap0(u: torch.Tensor, c) -> torch.Tensor:
    r""":math:`\exp^c_0(u) = \tanh(\sqrt{c}\|u\|)\, u / (\sqrt{c}\|u\|)`, projected strictly inside the ball.

    Huge ``u`` (``tanh`` rounds to 1 in float32 from :math:`\sqrt{c}\|u\| \approx 9`) land on the guard
    sphere; ``u = 0`` maps to the origin with a finite gradient (the norm is clamped at 1e-15, as in geoopt).
    """
    sc = _curv(c, u).sqrt()
    n = _norm(u)
    return project(torch.tanh(sc * n) * u / (sc * n), c)


def logmap0(x: torch.Tensor, c) -> torch.Tensor:
    r""":math:`\log^c_0(x) = \operatorname{artanh}(\sqrt{c}\|x\|)\, x / (\sqrt{c}\|x\|)` (inverse of :func:`expmap0`)."""
    sc = _curv(c, x).sqrt()
    n = _norm(x)
    return _atanh(sc * n) * x / (sc * n)


def expmap(x: torch.Tensor, u: torch.Tensor, c) -> torch.Tensor:
    r""":math:`\exp^c_x(u) = x \oplus_c \tanh(\sqrt{c}\,\lambda^c_x\|u\|/2)\, u / (\sqrt{c}\|u\|)`, projected."""
    cc = _curv(c, x)
    sc = cc.sqrt()
    n = _norm(u)
    step = torch.tanh(sc * lambda_x(x, cc, keepdim=True) * n / 2) * u / (sc * n)
    return project(mobius_add(x, step, cc), cc)


def logmap(x: torch.Tensor, y: torch.Tensor, c) -> torch.Tensor:
    r""":math:`\log^c_x(y) = \frac{2}{\sqrt{c}\,\lambda^c_x}\operatorname{artanh}(\sqrt{c}\|w\|)\, w/\|w\|`,
    :math:`w = (-x) \oplus_c y` (inverse of :func:`expmap` at ``x``)."""
    cc = _curv(c, x)
    sc = cc.sqrt()
    w = mobius_add(-x, y, cc)
    n = _norm(w)
    return 2 / (sc * lambda_x(x, cc, keepdim=True)) * _atanh(sc * n) * w / n


def dist(x: torch.Tensor, y: torch.Tensor, c, keepdim: bool = False) -> torch.Tensor:
    r"""Geodesic distance :math:`d_c(x, y) = \frac{2}{\sqrt{c}} \operatorname{artanh}(\sqrt{c}\|(-x)\oplus_c y\|)`
    of broadcast point pairs."""
    cc = _curv(c, x)
    sc = cc.sqrt()
    n = mobius_add(-x, y, cc).norm(dim=-1, keepdim=True)
    d = 2 / sc * _atanh(sc * n)
    return d if keepdim else d.squeeze(-1)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, c) -> torch.Tensor:
    r"""All distances between ``x`` (..., T, D) and ``y`` (..., S, D): (..., T, S).

    The same distance as :func:`dist`, written as

    .. math::

        d_c(x, y) = \frac{1}{\sqrt{c}}\operatorname{arcosh}\Big(1 + \frac{2c\|x-y\|^2}{(1-c\|x\|^2)(1-c\|y\|^2)}\Big)
                  = \frac{2}{\sqrt{c}}\operatorname{arsinh}\Big(\frac{\sqrt{c}\,\|x-y\|}
                    {\sqrt{(1-c\|x\|^2)(1-c\|y\|^2)}}\Big),

    using :math:`\operatorname{arcosh}(1+z) = 2\operatorname{arsinh}(\sqrt{z/2})`. The arsinh form needs no
    ``1 + z`` (which rounds to 1 in float32 for distances below ~3e-4) and no square root of a difference:
    ``||x - y||`` comes from ``torch.cdist`` in its direct (non-matmul) mode, so coincident points give
    exactly 0 and a finite gradient. This is an explicitly quadratic path, O(T S) memory; ``c`` broadcasts
    against the (..., T, S) result, e.g. ``(H, 1, 1)``.
    """
    c = _curv(c, x)
    x = project(x, c)
    y = project(y, c)
    diff = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    sc = c.sqrt()
    # per-point factors first (O(T + S)), so the (T, S) matrix sees two multiplications and the arsinh
    ax = sc * torch.rsqrt((1 - c * x.pow(2).sum(-1, keepdim=True)).clamp_min(_TINY))  # (..., T, 1)
    ay = torch.rsqrt((1 - c * y.pow(2).sum(-1, keepdim=True)).clamp_min(_TINY)).mT  # (..., 1, S)
    return torch.asinh(diff * ax * ay) * (2.0 / sc)


def gyromidpoint(weights: torch.Tensor, x: torch.Tensor, c) -> torch.Tensor:
    r"""Weighted Möbius gyromidpoints: ``weights`` (..., T, S) >= 0, points ``x`` (..., S, D) -> (..., T, D).

    .. math::

        m_t = \tfrac12 \otimes_c \frac{\sum_s w_{ts}\,\lambda^c_{x_s}\, x_s}{\sum_s w_{ts}\,(\lambda^c_{x_s} - 1)}

    (Ungar's gyromidpoint, geoopt's ``weighted_midpoint`` for every row of ``weights`` at once): the
    numerator and denominator are two matmuls. Since :math:`\lambda - 1 = (1 + c\|x\|^2)/(1 - c\|x\|^2) \ge 1`,
    the denominator is at least :math:`\sum_s w_{ts}`; rows of ``weights`` must not all be zero.
    """
    c = _curv(c, x)
    x = project(x, c)
    lam = lambda_x(x, c, keepdim=True)  # (..., S, 1)
    num = weights @ (lam * x)
    den = weights @ (lam - 1)
    return mobius_scalar_mul(0.5, num / den.clamp_min(_TINY), c)


__all__ = [
    "ball_eps",
    "dist",
    "expmap",
    "expmap0",
    "gyromidpoint",
    "lambda_x",
    "logmap",
    "logmap0",
    "mobius_add",
    "mobius_scalar_mul",
    "pairwise_dist",
    "project",
]

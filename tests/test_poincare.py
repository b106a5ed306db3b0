"""Poincaré-ball math (geometry.poincare): identities in float32 and float64, agreement with geoopt,
finite values and gradients at the origin, at the rim and beyond it."""

from __future__ import annotations

import math

import pytest
import torch
from geoopt.manifolds.stereographic import math as gmath

from geoformer.geometry import poincare as P

# identities hold to a few ulps times the conditioning of the maps on the sampled region
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param




def ball_points(n, d, c, dtype, rmax=None, rmin=1e-6, seed=0):
    """``n`` points in the ball of curvature -c: random directions, radii log-spread in [rmin, rmax] / sqrt(c)
    (rmax defaults to the dtype's guard radius)."""
    g = torch.Generator().manual_seed(seed)
    rmax = 1 - P.ball_eps(dtype) if rmax is None else rmax
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(rmin), math.log(rmax), generator=g))
    return (u * r[:, None] / math.sqrt(c)).to(dtype)


def rel_err(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).max().item()


@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_exp0_log0_round_trip(dtype, c):
    x = ball_points(500, 8, c, dtype)
    assert rel_err(P.expmap0(P.logmap0(x, c), c), x) < (1e-6 if dtype == torch.float32 else 1e-13)
    # tangent vectors whose image is inside the guard radius
    u = P.logmap0(ball_points(500, 8, c, dtype, seed=1), c)
    assert rel_err(P.logmap0(P.expmap0(u, c), c), u) < (1e-4 if dtype == torch.float32 else 1e-10)


def test_exp0_log0_round_trip_seed_target_float64():
    """The write-up's target: relative error < 1e-6, here in float64 over the whole guarded ball."""
    x = ball_points(4000, 16, 1.0, torch.float64, rmin=1e-8)
    assert rel_err(P.expmap0(P.logmap0(x, 1.0), 1.0), x) < 1e-6


@pytest.mark.parametrize("c", [0.5, 1.7])
def test_exp_log_round_trip_at_a_base_point(dtype, c):
    # base points and targets within sqrt(c)|x| <= 0.9, where exp_x is conditioned like lambda_x^2 <= 111
    x = ball_points(300, 6, c, dtype, rmax=0.9, rmin=1e-3)
    y = ball_points(300, 6, c, dtype, rmax=0.9, rmin=1e-3, seed=1)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(P.expmap(x, P.logmap(x, y, c), c), y, rtol=tol, atol=tol)
    u = P.logmap(x, y, c)
    torch.testing.assert_close(P.logmap(x, P.expmap(x, u, c), c), u, rtol=tol * 10, atol=tol * 10)


def test_mobius_left_cancellation(dtype):
    c = 1.3
    a, b = ball_points(300, 5, c, dtype, rmax=0.95), ball_points(300, 5, c, dtype, rmax=0.95, seed=1)
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(P.mobius_add(-a, P.mobius_add(a, b, c), c), b, rtol=tol, atol=tol)


def test_distance_axioms(dtype):
    c = 0.8
    x = ball_points(40, 4, c, dtype)
    y = ball_points(40, 4, c, dtype, seed=1)
    z = ball_points(40, 4, c, dtype, seed=2)
    d = P.pairwise_dist(x, x, c)
    assert (d >= 0).all()
    assert torch.equal(d.diagonal(), torch.zeros(40, dtype=dtype))
    torch.testing.assert_close(d, d.T, rtol=TOL[dtype], atol=TOL[dtype])
    dxy, dyz, dxz = P.dist(x, y, c), P.dist(y, z, c), P.dist(x, z, c)
    assert (dxz <= dxy + dyz + 1e-4).all()  # triangle inequality
    torch.testing.assert_close(P.dist(x, y, c), P.dist(y, x, c), rtol=TOL[dtype], atol=TOL[dtype])
    # pointwise: (-x) + x leaves a rounding residue in the Moebius sum, the pairwise (cdist) form is exact
    torch.testing.assert_close(P.dist(x, x, c), torch.zeros(40, dtype=dtype), rtol=0, atol=TOL[dtype])


def test_pairwise_equals_pointwise(dtype):
    c = 1.9
    x, y = ball_points(30, 6, c, dtype, rmax=0.99), ball_points(20, 6, c, dtype, rmax=0.99, seed=1)
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(P.pairwise_dist(x, y, c), P.dist(x[:, None], y[None], c), rtol=tol, atol=tol)


def test_distance_from_origin_and_small_distances(dtype):
    c = 1.0
    x = ball_points(200, 3, c, dtype)
    z = torch.zeros_like(x)
    # d(0, x) = 2 artanh(|x|) / sqrt(c)
    ref = 2 * torch.atanh(x.double().norm(dim=-1))
    torch.testing.assert_close(
        P.dist(z, x, c).double(), ref, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0
    )
    # two points 1e-5 apart near the origin are about 2e-5 apart: no rounding of 1 + z to 1
    a = torch.zeros(1, 3, dtype=dtype)
    b = a.clone()
    b[0, 0] = 1e-5
    torch.testing.assert_close(
        P.pairwise_dist(a, b, c), torch.full((1, 1), 2e-5, dtype=dtype), rtol=1e-4, atol=0
    )


def test_agrees_with_geoopt_float64():
    """Every function against geoopt's own, 1e-10 in float64, away from geoopt's artanh clamp (1 - 1e-7)
    and its small-argument cancellation (radii in [1e-2, 0.9])."""
    dt = torch.float64
    for c in (0.4, 1.0, 3.0):
        k = torch.tensor(-c, dtype=dt)
        x = ball_points(200, 7, c, dt, rmax=0.9, rmin=1e-2)
        y = ball_points(200, 7, c, dt, rmax=0.9, rmin=1e-2, seed=1)
        u = torch.randn(200, 7, dtype=dt, generator=torch.Generator().manual_seed(2))
        close = dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(P.expmap0(u, c), gmath.project(gmath.expmap0(u, k=k), k=k), **close)
        torch.testing.assert_close(P.logmap0(x, c), gmath.logmap0(x, k=k), **close)
        torch.testing.assert_close(P.expmap(x, u * 0.1, c), gmath.expmap(x, u * 0.1, k=k), **close)
        torch.testing.assert_close(P.logmap(x, y, c), gmath.logmap(x, y, k=k), **close)
        torch.testing.assert_close(P.mobius_add(x, y, c), gmath.mobius_add(x, y, k=k), **close)
        torch.testing.assert_close(
            P.mobius_scalar_mul(0.7, x, c),
            gmath.mobius_scalar_mul(torch.tensor(0.7, dtype=dt), x, k=k),
            **close,
        )
        torch.testing.assert_close(P.lambda_x(x, c), gmath.lambda_x(x, k=k), **close)
        torch.testing.assert_close(P.dist(x, y, c), gmath.dist(x, y, k=k), **close)
        torch.testing.assert_close(
            P.pairwise_dist(x[:50], y[:40], c), gmath.dist(x[:50, None], y[None, :40], k=k), **close
        )
        w = torch.rand(9, 40, dtype=dt, generator=torch.Generator().manual_seed(3))
        ref = torch.stack([gmath.weighted_midpoint(y[:40], w[i], k=k, reducedim=[0]) for i in range(9)])
        torch.testing.assert_close(P.gyromidpoint(w, y[:40], c), ref, **close)


def test_gyromidpoint_properties(dtype):
    c = 1.2
    x = ball_points(12, 4, c, dtype, rmax=0.95)
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    # one-hot weights return the point; the weights' scale does not matter
    torch.testing.assert_close(P.gyromidpoint(torch.eye(12, dtype=dtype), x, c), x, rtol=tol, atol=tol)
    w = torch.rand(5, 12, dtype=dtype)
    torch.testing.assert_close(P.gyromidpoint(w, x, c), P.gyromidpoint(7 * w, x, c), rtol=tol, atol=tol)
    # two points, equal weights: the midpoint is equidistant from both (on the geodesic)
    m = P.gyromidpoint(torch.ones(1, 2, dtype=dtype), x[:2], c)
    d0, d1 = P.dist(m, x[:1], c), P.dist(m, x[1:2], c)
    torch.testing.assert_close(d0, d1, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(d0 + d1, P.dist(x[:1], x[1:2], c), rtol=tol * 10, atol=tol * 10)


def test_per_head_curvature_broadcasts(dtype):
    c = torch.tensor([0.5, 1.0, 2.0], dtype=dtype).view(3, 1, 1)
    x = torch.randn(2, 3, 5, 4, dtype=dtype)
    y = torch.randn(2, 3, 6, 4, dtype=dtype)
    d = P.pairwise_dist(P.expmap0(x, c), P.expmap0(y, c), c)
    for h, ch in enumerate((0.5, 1.0, 2.0)):
        ref = P.pairwise_dist(P.expmap0(x[:, h], ch), P.expmap0(y[:, h], ch), ch)
        torch.testing.assert_close(d[:, h], ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_finite_values_and_gradients_at_origin_rim_and_beyond(dtype):
    c = 1.0
    d = 4
    unit = torch.ones(d, dtype=dtype) / math.sqrt(d)
    raw = torch.stack(
        [
            torch.zeros(d, dtype=dtype),  # the origin
            unit * 1e-20,  # next to it
            unit * (1 - P.ball_eps(dtype)),  # on the guard sphere
            unit,  # on the rim
            unit * 10,  # outside the ball
            unit * 1e8,  # huge
        ]
    )
    for name, f in {
        "expmap0": lambda z: P.expmap0(z, c),
        "logmap0(project)": lambda z: P.logmap0(P.project(z, c), c),
        "pairwise_dist": lambda z: P.pairwise_dist(P.expmap0(z, c), P.project(z.flip(0), c), c),
        "self distance": lambda z: P.pairwise_dist(P.project(z, c), P.project(z, c), c),
        "gyromidpoint": lambda z: P.gyromidpoint(torch.rand(3, z.size(0), dtype=dtype), P.project(z, c), c),
        "logmap": lambda z: P.logmap(P.project(z, c), P.project(z.flip(0), c), c),
        "expmap": lambda z: P.expmap(P.project(z, c), z.flip(0), c),
    }.items():
        z = raw.clone().requires_grad_()
        out = f(z)
        assert torch.isfinite(out).all(), name
        out.sum().backward()
        assert torch.isfinite(z.grad).all(), name
    # and the points handed back are strictly inside the ball
    assert (P.expmap0(raw, c).norm(dim=-1) < 1).all()


def test_gradcheck_float64():
    c = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    x = (ball_points(5, 3, 1.4, torch.float64, rmax=0.9, rmin=0.05)).requires_grad_()
    y = (ball_points(4, 3, 1.4, torch.float64, rmax=0.9, rmin=0.05, seed=1)).requires_grad_()
    w = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, cc: P.pairwise_dist(a, b, cc), (x, y, c))
    assert torch.autograd.gradcheck(lambda ww, b, cc: P.gyromidpoint(ww, b, cc), (w, y, c))
    assert torch.autograd.gradcheck(lambda a, cc: P.logmap0(P.expmap0(a, cc), cc), (x, c))


def test_non_positive_curvature_is_an_error():
    with pytest.raises(ValueError, match="c must be > 0"):
        P.expmap0(torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        P.dist(torch.zeros(3), torch.zeros(3), -1.0)


def test_importing_the_models_does_not_import_geoopt_or_scipy():
    """geoopt (and the scipy it imports, ~50 MiB resident) loads on first use of the ball, not with every model."""
    import subprocess
    import sys

    code = "import sys, geoformer.train.trainer; print('geoopt' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

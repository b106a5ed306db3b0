"""SO(3) irreps as math: Lie algebra relations, the exponential map, homomorphism, adjoint action, transport.

Everything in float64 against identities (and against e3nn / ``matrix_exp`` for the exponential map).
"""

from __future__ import annotations

import math

import pytest
import torch

from geoformer.geometry import so3

LS = [0, 1, 2, 3, 4]
F64 = dict(dtype=torch.float64)




def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


def rand_phi(*shape, max_angle=math.pi / 2, seed=0):
    """Random rotation vectors with angles below ``max_angle`` (so products stay on the principal branch)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(*shape, 3, generator=g, **F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(*shape, 1, generator=g, **F64) * max_angle
    return axis * angle


def eye(K):
    return torch.eye(K, **F64)


@pytest.mark.parametrize("l", LS)
def test_generators_skew_commutators_casimir(l):
    G = so3.generators(l, torch.float64)
    K = 2 * l + 1
    assert G.shape == (3, K, K)
    close(G, -G.transpose(-1, -2), 0)
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # [G_x, G_y] = G_z, cyclic
        close(G[a] @ G[b] - G[b] @ G[a], G[c])
    close(-(G @ G).sum(0), l * (l + 1) * eye(K))


def test_l1_generators_are_cartesian():
    # (G_a)_bc = -eps_abc: hat(phi) v = phi x v
    phi, v = torch.randn(3, **F64), torch.randn(3, **F64)
    close(so3.hat(phi, 1) @ v, torch.linalg.cross(phi, v))


def test_generators_reject_bad_l():
    with pytest.raises(ValueError):
        so3.generators(-1)
    with pytest.raises(ValueError):
        so3.exp_map(torch.zeros(3), 1.5)


@pytest.mark.parametrize("l", LS)
def test_exp_map_equals_matrix_exp_and_e3nn(l):
    from e3nn import o3

    phi = rand_phi(40, max_angle=3.0)
    phi[0] = 0.0
    phi[1] = 1e-9 * phi[1]
    D = so3.exp_map(phi, l)
    close(D, so3.exp_map_reference(phi, l), 1e-12)
    angle = phi.norm(dim=-1)
    axis = phi[2:] / angle[2:, None]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
    try:
        ref = o3.Irrep(l, 1).D_from_axis_angle(axis, angle[2:])
    finally:
        torch.set_default_dtype(old)
    close(D[2:], ref, 1e-11)


def test_exp_maps_shares_work_and_matches():
    phi = rand_phi(5, 7, max_angle=3.0)
    Ds = so3.exp_maps(phi, [0, 2, 3])
    assert sorted(Ds) == [0, 2, 3]
    for l, D in Ds.items():
        close(D, so3.exp_map(phi, l))


def test_exp_map_float32_accuracy():
    phi = rand_phi(50, max_angle=3.0)
    for l in (1, 2, 3):
        err = (so3.exp_map(phi.float(), l).double() - so3.exp_map(phi, l)).abs().max()
        assert err < 1e-5


@pytest.mark.parametrize("l", LS)
def test_exp_map_orthogonal_det_one(l):
    D = so3.exp_map(rand_phi(30, max_angle=3.1), l)
    K = 2 * l + 1
    close(D @ D.transpose(-1, -2), eye(K).expand_as(D), 1e-12)
    close(torch.linalg.det(D), torch.ones(30, **F64), 1e-12)


@pytest.mark.parametrize("l", LS)
def test_homomorphism(l):
    """D(g1 g2) = D(g1) D(g2), with g1 g2 computed in the l = 1 irrep and taken back through log."""
    p1, p2 = rand_phi(30, seed=1), rand_phi(30, seed=2)
    p12 = so3.compose(p1, p2)
    close(so3.exp_map(p12, l), so3.exp_map(p1, l) @ so3.exp_map(p2, l), 1e-12)
    close(so3.exp_map(-p1, l), so3.exp_map(p1, l).transpose(-1, -2), 1e-12)  # D(g^-1) = D(g)^T


def test_log_inverts_exp():
    phi = rand_phi(50, max_angle=3.0)
    phi[0] = 1e-7 * phi[0]
    close(so3.log_map(so3.exp_map(phi, 1)), phi, 1e-10)


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-6, 1e-9, 1e-12])
def test_log_is_accurate_up_to_pi_and_agrees_with_scipy(eps):
    """Near theta = pi the skew part vanishes; the old arccos / sin formula lost ~eps_machine / (pi - theta)^2
    (5e-3 at pi - 1e-6). Against scipy's as_rotvec on the same matrices, to 1e-13 at every distance from pi."""
    import math

    from scipy.spatial.transform import Rotation

    n = rand_phi(200, seed=7)
    n = n / n.norm(dim=-1, keepdim=True)
    phi = (math.pi - eps) * n
    R = so3.exp_map(phi, 1)
    back = so3.log_map(R)
    close(back, phi, 1e-13)
    close(back, torch.from_numpy(Rotation.from_matrix(R.numpy()).as_rotvec()), 1e-13)


def test_log_at_exactly_pi_is_a_logarithm():
    import math

    n = rand_phi(50, seed=8)
    n = n / n.norm(dim=-1, keepdim=True)
    R = so3.exp_map(math.pi * n, 1)
    back = so3.log_map(R)
    close(back.norm(dim=-1), torch.full((50,), math.pi, dtype=torch.float64), 1e-12)
    close(so3.exp_map(back, 1), R, 1e-13)  # +n pi and -n pi are the same rotation


@pytest.mark.parametrize("l", [1, 2, 3])
def test_adjoint_conjugates_frames(l):
    """rho exp(phi) rho^T = exp(Ad_g phi) in every irrep, with Ad_g found by projection."""
    g, phi = rand_phi(10, max_angle=3.0, seed=3), rand_phi(10, max_angle=3.0, seed=4)
    Ad = so3.adjoint(g, l)
    rho = so3.exp_map(g, l)
    lhs = rho @ so3.exp_map(phi, l) @ rho.transpose(-1, -2)
    close(so3.exp_map((Ad @ phi[..., None])[..., 0], l), lhs, 1e-11)


def test_adjoint_is_the_same_in_every_irrep_and_a_rotation():
    g = rand_phi(10, max_angle=3.0, seed=5)
    Ad = so3.adjoint(g, 1)
    for l in (2, 3, 4):
        close(so3.adjoint(g, l), Ad, 1e-11)
    close(Ad, so3.exp_map(g, 1), 1e-12)  # in e3nn's Cartesian l = 1 basis, Ad_g is D^1(g) itself
    close(Ad @ Ad.transpose(-1, -2), eye(3).expand_as(Ad), 1e-12)
    g2 = rand_phi(10, seed=6)
    g1 = rand_phi(10, seed=7)
    close(so3.adjoint(so3.compose(g1, g2)), so3.adjoint(g1) @ so3.adjoint(g2), 1e-11)
    with pytest.raises(ValueError):
        so3.adjoint(g, 0)


@pytest.mark.parametrize("l", LS)
def test_transport_identities(l):
    phi = rand_phi(3, 6, max_angle=3.0, seed=8)
    i, j, k = phi[0], phi[1], phi[2]
    K = 2 * l + 1
    close(so3.transport(i, i, l), eye(K).expand(6, K, K), 1e-12)  # Omega_ii = I
    close(so3.transport(i, j, l) @ so3.transport(j, k, l), so3.transport(i, k, l), 1e-12)
    O = so3.transport(i, j, l)
    close(O @ O.transpose(-1, -2), eye(K).expand_as(O), 1e-12)
    close(torch.linalg.det(O), torch.ones(6, **F64), 1e-12)


def test_exp_map_gradcheck_including_zero():
    phi = rand_phi(2, max_angle=2.0).requires_grad_(True)
    for l in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda p, l=l: so3.exp_map(p, l), (phi,), fast_mode=True)
    zero = torch.zeros(2, 3, **F64, requires_grad=True)
    (so3.exp_map(zero, 2) * torch.randn(2, 5, 5, **F64)).sum().backward()
    assert torch.isfinite(zero.grad).all()
    # at phi = 0 the derivative along e_a is the generator G_a
    jac = torch.autograd.functional.jacobian(lambda p: so3.exp_map(p, 2), torch.zeros(3, **F64))
    close(jac.permute(2, 0, 1), so3.generators(2, torch.float64), 1e-12)


@pytest.mark.parametrize("l", [so3._BILINEAR_MAX_L, so3._BILINEAR_MAX_L + 1, 9])
def test_both_recursion_steps_match_matrix_exp_and_gradcheck(l):
    """The recursion step is one bilinear matmul up to _BILINEAR_MAX_L and three folded matmuls above it (l = 9 is
    the gauge_l9 preset's head): both equal expm of the generators, on batches of two leading dims."""
    phi = rand_phi(4, 6, max_angle=3.0, seed=11)
    close(so3.exp_map(phi, l), so3.exp_map_reference(phi, l), 1e-11)
    p = rand_phi(3, max_angle=2.0, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: so3.exp_map(q, l), (p,), fast_mode=True)

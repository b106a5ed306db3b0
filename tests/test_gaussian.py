"""Gaussian beliefs: parametrisations and the closed-form KL against torch.distributions and Monte Carlo."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from geoformer.geometry import gaussian

F64 = dict(dtype=torch.float64)




def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def rand_full(*shape, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(*shape, K, generator=g, **F64)
    L = gaussian.cholesky_factor(torch.randn(*shape, K * (K + 1) // 2, generator=g, **F64), K)
    return mu, L


def test_positive_variance():
    raw = torch.linspace(-60, 1e4, 1001, **F64)
    v = gaussian.positive_variance(raw)
    assert (v > 0).all() and (v >= gaussian.min_variance(torch.float64)).all() and torch.isfinite(v).all()
    assert (v.diff() >= 0).all()  # monotone
    close(gaussian.positive_variance(torch.zeros(3, **F64)), torch.ones(3, **F64))
    close(gaussian.positive_variance(torch.zeros(3)), torch.ones(3), 1e-6)
    assert gaussian.positive_variance(torch.full((2,), -100.0)).min() >= gaussian.min_variance(torch.float32)
    assert (
        gaussian.min_variance(torch.bfloat16)
        > gaussian.min_variance(torch.float32)
        > gaussian.min_variance(torch.float64)
    )


@pytest.mark.parametrize("K", [1, 3, 5])
def test_cholesky_factor(K):
    L = gaussian.cholesky_factor(torch.randn(4, K * (K + 1) // 2, **F64), K)
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    close(gaussian.cholesky_factor(torch.zeros(K * (K + 1) // 2, **F64), K), torch.eye(K, **F64))
    close(gaussian.logdet_from_cholesky(L), torch.logdet(L @ L.transpose(-1, -2)), 1e-10)
    with pytest.raises(ValueError):
        gaussian.cholesky_factor(torch.zeros(K * (K + 1) // 2 + 1), K)


@pytest.mark.parametrize("K", [1, 3, 7])
def test_kl_full_matches_torch_distributions(K):
    mu0, L0 = rand_full(20, K=K, seed=1)
    mu1, L1 = rand_full(20, K=K, seed=2)
    ref = kl_divergence(MultivariateNormal(mu0, scale_tril=L0), MultivariateNormal(mu1, scale_tril=L1))
    close(gaussian.kl_full(mu0, L0, mu1, L1), ref, 1e-10)
    close(gaussian.kl_full_cov(mu0, L0 @ L0.mT, mu1, L1 @ L1.mT), ref, 1e-9)


@pytest.mark.parametrize("K", [1, 5])
def test_kl_diag_matches_torch_distributions_and_full(K):
    g = torch.Generator().manual_seed(3)
    mu0, mu1 = torch.randn(2, 20, K, generator=g, **F64)
    v0, v1 = gaussian.positive_variance(torch.randn(2, 20, K, generator=g, **F64))
    ref = kl_divergence(Independent(Normal(mu0, v0.sqrt()), 1), Independent(Normal(mu1, v1.sqrt()), 1))
    close(gaussian.kl_diag(mu0, v0, mu1, v1), ref, 1e-12)
    close(gaussian.kl_full(mu0, torch.diag_embed(v0.sqrt()), mu1, torch.diag_embed(v1.sqrt())), ref, 1e-12)


def test_kl_zero_on_self_and_nonnegative():
    mu, L = rand_full(50, K=5, seed=4)
    close(gaussian.kl_full(mu, L, mu, L), torch.zeros(50, **F64), 1e-12)
    var = L.diagonal(dim1=-2, dim2=-1).square()
    close(gaussian.kl_diag(mu, var, mu, var), torch.zeros(50, **F64), 1e-12)
    mu1, L1 = rand_full(50, K=5, seed=5)
    assert (gaussian.kl_full(mu, L, mu1, L1) > 0).all()
    assert (gaussian.kl_full(mu, L, mu + 1e-3, L) >= 0).all()


def test_kl_monte_carlo():
    """KL(q0 || q1) = E_{x ~ q0}[log q0(x) - log q1(x)]: 200k samples, within 5 standard errors."""
    torch.manual_seed(0)
    mu0, L0 = rand_full(K=3, seed=6)
    mu1, L1 = rand_full(K=3, seed=7)
    q0, q1 = MultivariateNormal(mu0, scale_tril=L0), MultivariateNormal(mu1, scale_tril=L1)
    x = q0.sample((200_000,))
    d = q0.log_prob(x) - q1.log_prob(x)
    se = d.std() / len(d) ** 0.5
    assert abs(d.mean() - gaussian.kl_full(mu0, L0, mu1, L1)) < 5 * se


def test_kl_gradcheck():
    mu0, L0 = rand_full(3, K=3, seed=8)
    mu1, L1 = rand_full(3, K=3, seed=9)
    args = tuple(t.clone().requires_grad_(True) for t in (mu0, L0, mu1, L1))
    assert torch.autograd.gradcheck(gaussian.kl_full, args, fast_mode=True)

"""Loss curvature from Hessian-vector products: top eigenvalue, Hutchinson trace, gradient norm.

All estimates use ``torch.autograd.grad`` on their own forward pass, so they neither touch ``.grad``
nor consume the training step's graph: an optimizer step after an estimate is the step it would
have been without one. Fused SDPA kernels have no double backward, so the probe's forward runs under
the math backend (``sdpa_kernel(SDPBackend.MATH)``), which has one.

Under torch.distributed every rank probes the same batch (the trainer hands all ranks the same
probe batch), and the scalar estimates are averaged across ranks so all ranks agree bit-for-bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from geoformer.train import distributed

Params = Sequence[torch.Tensor]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    return _dot(a, a).sqrt()


def loss_and_grad(
    loss_fn: Callable[[], torch.Tensor], params: Params
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss and its gradient with the graph kept (``create_graph=True``) for HVPs."""
    with sdpa_kernel([SDPBackend.MATH]):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
    return loss, grads


def hvp(grads: Sequence[torch.Tensor], params: Params, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """H v by double backward: d/dθ <∇L(θ), v>, with ``grads`` from :func:`loss_and_grad`."""
    with sdpa_kernel([SDPBackend.MATH]):
        out = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
    return [o if o is not None else torch.zeros_like(p) for o, p in zip(out, params, strict=True)]


def power_iteration(
    grads: Sequence[torch.Tensor],
    params: Params,
    *,
    max_iters: int = 20,
    tol: float = 1e-6,
    v0: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, list[torch.Tensor], int]:
    """Dominant eigenpair of the Hessian by power iteration on H v.

    Returns (lambda, v, iterations) with lambda the Rayleigh quotient v^T H v of the unit vector v
    (signed: it is the eigenvalue of largest magnitude). Stops when |lambda_k - lambda_{k-1}| <=
    tol * |lambda_k|. ``v0`` warm-starts from a previous vector (a few iterations then suffice).
    """
    if v0 is None:
        v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    else:
        v = [t.detach().clone() for t in v0]
    n = _norm(v)
    v = [t / n for t in v]
    lam_prev = None
    lam = 0.0
    it = 0
    for it in range(1, max_iters + 1):  # noqa: B007  (returned)
        hv = hvp(grads, params, v)
        lam = _dot(v, hv).item()
        n = _norm(hv)
        if n.item() == 0.0 or not math.isfinite(n.item()):
            break
        v = [t.detach() / n for t in hv]
        if lam_prev is not None and abs(lam - lam_prev) <= tol * max(abs(lam), 1e-30):
            break
        lam_prev = lam
    return lam, v, it


def hutchinson_trace(
    grads: Sequence[torch.Tensor],
    params: Params,
    *,
    probes: int = 10,
    generator: torch.Generator | None = None,
) -> float:
    """tr(H) ≈ mean over Rademacher z of z^T H z (unbiased; variance 2 Σ_{i≠j} H_ij^2 per probe)."""
    total = 0.0
    for _ in range(probes):
        z = [
            (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8) * 2 - 1).to(
                p.device, p.dtype
            )
            for p in params
        ]
        total += _dot(z, hvp(grads, params, z)).item()
    return total / probes


@dataclass
class CurvatureEstimate:
    loss: float
    grad_norm: float
    lambda_max: float  # Rayleigh quotient of the power-iteration vector (signed)
    trace: float | None  # Hutchinson estimate; None when probes == 0
    power_iters: int

    def kappa(self, eps: float = 1e-10) -> float:
        """The seed's curvature: ||H|| / ||g||^2 (0 when ||g|| < eps, as in its C++ core)."""
        g2 = self.grad_norm**2
        return abs(self.lambda_max) / g2 if self.grad_norm >= eps else 0.0

    def as_dict(self) -> dict[str, float]:
        d = {
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "lambda_max": self.lambda_max,
            "kappa": self.kappa(),
        }
        if self.trace is not None:
            d["trace"] = self.trace
        return d


class CurvatureProbe:
    """Estimate curvature of ``loss_fn()`` with respect to ``params`` (all of the model's by default).

    ``loss_fn`` evaluates the loss on a dedicated probe batch. The power-iteration vector is kept
    between calls (warm start) and in :meth:`state_dict`, so a resumed run probes identically.
    """

    def __init__(
        self,
        loss_fn: Callable[[], torch.Tensor],
        params: Params,
        *,
        power_iters: int = 20,
        tol: float = 1e-6,
        hutchinson_probes: int = 10,
        seed: int = 0,
    ) -> None:
        self.loss_fn = loss_fn
        self.params = [p for p in params if p.requires_grad]
        self.power_iters, self.tol, self.probes = power_iters, tol, hutchinson_probes
        self.generator = torch.Generator().manual_seed(seed)
        self.v: list[torch.Tensor] | None = None

    def estimate(self) -> CurvatureEstimate:
        loss, grads = loss_and_grad(self.loss_fn, self.params)
        gnorm = _norm([g.detach() for g in grads]).item()
        lam, self.v, iters = power_iteration(
            grads, self.params, max_iters=self.power_iters, tol=self.tol, v0=self.v, generator=self.generator
        )
        tr = (
            hutchinson_trace(grads, self.params, probes=self.probes, generator=self.generator)
            if self.probes
            else None
        )
        vals = torch.tensor([loss.item(), gnorm, lam, tr if tr is not None else 0.0], dtype=torch.float64)
        vals = distributed.all_reduce_mean(vals)  # identical probe batch on every rank: agree exactly
        return CurvatureEstimate(
            loss=vals[0].item(),
            grad_norm=vals[1].item(),
            lambda_max=vals[2].item(),
            trace=vals[3].item() if tr is not None else None,
            power_iters=iters,
        )

    def state_dict(self) -> dict:
        return {"v": self.v, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.v = state.get("v")
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])

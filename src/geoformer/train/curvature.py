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
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    """tr(H) ≈ mean over Rademacher z of z^T H z (unbiased; variance 2 Σ_{i≠j} H_ij^2 per probe).

    See :func:`hutchinson_samples` for the per-probe values (their spread gives the standard error)."""
    return sum(hutchinson_samples(grads, params, probes=probes, generator=generator)) / probes


def hutchinson_samples(
    grads: Sequence[torch.Tensor], params: Params, *, probes: int = 10, generator: torch.Generator | None = None
) -> list[float]:
    """``z^T H z`` for ``probes`` Rademacher vectors z (each an unbiased estimate of tr(H))."""
    out = []
    for _ in range(probes):
        z = [
            (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8) * 2 - 1).to(
                p.device, p.dtype
            )
            for p in params
        ]
        out.append(_dot(z, hvp(grads, params, z)).item())
    return out


def lanczos_top_eigenvalue(
    grads: Sequence[torch.Tensor],
    params: Params,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_matvecs: int = 300,
    seed: int = 0,
    v0: Sequence[torch.Tensor] | None = None,
    ncv: int = 20,
    return_vector: bool = False,
) -> dict[str, Any]:
    """The Hessian's top eigenvalue by implicitly restarted Lanczos (ARPACK, ``scipy.sparse.linalg.eigsh``)
    on Hessian-vector products: ``which="LA"`` the largest (algebraic) eigenvalue, ``"LM"`` the largest in
    magnitude. Converges in far fewer HVPs than power iteration when the top of the spectrum is clustered.

    Returns ``{"lambda", "residual", "matvecs"}`` with ``residual = ||H v - lambda v|| / |lambda|`` checked by one
    extra HVP (ARPACK's own tolerance is relative to the eigenvalue, ``tol``); when ARPACK does not converge
    within ``max_matvecs`` HVPs its best Ritz pair is returned with ``converged = False`` and its residual (NaN
    only if it has none). A non-finite Hessian-vector product (weights or gradients already NaN, as in a run
    that is diverging) or any other ARPACK failure gives ``lambda = NaN`` instead of an exception, so the run's
    own divergence check (a non-finite loss) ends it. ``v0`` warm-starts from an earlier eigenvector;
    ``return_vector`` adds ``"vector"``.
    """
    import numpy as np
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]
    n = sum(sizes)
    calls = [0]

    def split(x: np.ndarray) -> list[torch.Tensor]:
        flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        return [c.view(s).to(p.device, p.dtype) for c, s, p in zip(flat.split(sizes), shapes, params, strict=True)]

    class NonFinite(Exception):
        pass

    def matvec(x: np.ndarray) -> np.ndarray:
        calls[0] += 1
        hv = hvp(grads, params, split(x.ravel()))
        out = torch.cat([h.detach().reshape(-1).double().cpu() for h in hv]).numpy()
        if not np.isfinite(out).all():  # ARPACK would fail on it with an opaque error (-9999, DLASCL)
            raise NonFinite
        return out

    def failed() -> dict[str, Any]:  # no eigenpair: lambda NaN, with the HVPs spent so far
        return {"lambda": math.nan, "residual": math.nan, "matvecs": float(calls[0]), "converged": False}

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    if v0 is not None:
        start = torch.cat([t.detach().reshape(-1).double().cpu() for t in v0]).numpy()
    else:
        start = np.random.default_rng(seed).standard_normal(n)
    converged = True
    try:
        vals, vecs = eigsh(op, k=1, which=which, tol=tol, v0=start, maxiter=max(1, max_matvecs // ncv), ncv=min(n, ncv))
    except ArpackNoConvergence as e:
        converged = False
        if len(e.eigenvalues) == 0:
            return failed()
        vals, vecs = e.eigenvalues, e.eigenvectors
    except (NonFinite, ArpackError):
        return failed()
    lam, v = float(vals[0]), vecs[:, 0]
    try:
        resid = float(np.linalg.norm(matvec(v) - lam * v) / max(abs(lam), 1e-30))
    except NonFinite:
        resid = math.nan
    out: dict[str, Any] = {"lambda": lam, "residual": resid, "matvecs": float(calls[0]), "converged": converged}
    if return_vector:
        out["vector"] = split(v / max(np.linalg.norm(v), 1e-30))
    return out


@dataclass
class CurvatureEstimate:
    loss: float
    grad_norm: float
    lambda_max: float  # the top eigenvalue estimate (largest algebraic by default; see CurvatureProbe.which)
    trace: float | None  # Hutchinson estimate; None when probes == 0
    power_iters: int  # HVPs spent on the eigenvalue
    residual: float = math.nan  # ||H v - lambda v|| / |lambda| of the returned eigenpair
    trace_se: float = math.nan  # standard error of the Hutchinson estimate (NaN with fewer than 2 probes)

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
        if math.isfinite(self.residual):
            d["lambda_residual"] = self.residual
        if self.trace is not None:
            d["trace"] = self.trace
            if math.isfinite(self.trace_se):
                d["trace_se"] = self.trace_se
        return d


class CurvatureProbe:
    """Estimate curvature of ``loss_fn()`` with respect to ``params`` (all of the model's by default).

    ``loss_fn`` evaluates the loss on a dedicated probe batch. The top eigenvalue comes from ``method="lanczos"``
    (ARPACK on HVPs, to relative tolerance ``tol``, at most ``power_iters`` HVPs; ``which="LA"``: the largest
    eigenvalue, as PyHessian reports it, or ``"LM"``: the largest in magnitude) or ``method="power"`` (power
    iteration, ``power_iters`` iterations, the largest in magnitude; the write-up's estimator). Either way the
    eigenvector is kept between calls (warm start) and in :meth:`state_dict`, so the next estimate starts close
    and a resumed run probes identically. ``power_iters = 0`` skips the eigenvalue.
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
        method: str = "power",
        which: str = "LA",
        ncv: int = 8,
    ) -> None:
        if method not in ("power", "lanczos") or which not in ("LA", "LM"):
            raise ValueError(f"method must be power or lanczos and which LA or LM, got {method!r}, {which!r}")
        self.loss_fn = loss_fn
        self.params = [p for p in params if p.requires_grad]
        self.power_iters, self.tol, self.probes = power_iters, tol, hutchinson_probes
        self.method, self.which, self.ncv = method, which, ncv
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.v: list[torch.Tensor] | None = None

    def _eigen(self, grads) -> tuple[float, int, float]:
        if self.method == "power":
            lam, self.v, iters = power_iteration(
                grads, self.params, max_iters=self.power_iters, tol=self.tol, v0=self.v, generator=self.generator
            )
            hv = hvp(grads, self.params, self.v)  # the residual costs one more HVP
            r = _norm([h - lam * x for h, x in zip(hv, self.v, strict=True)]).item() / max(abs(lam), 1e-30)
            return lam, iters + 1, r
        res = lanczos_top_eigenvalue(grads, self.params, which=self.which, tol=self.tol, max_matvecs=self.power_iters,
                                     seed=self.seed, v0=self.v, ncv=self.ncv, return_vector=True)  # fmt: skip
        if "vector" in res:
            self.v = res["vector"]
        return res["lambda"], int(res["matvecs"]), res["residual"]

    def estimate(self) -> CurvatureEstimate:
        if self.power_iters == 0 and not self.probes:  # gradient norm only: no graph for HVPs
            loss = self.loss_fn()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params, strict=True)]
        else:
            loss, grads = loss_and_grad(self.loss_fn, self.params)
        gnorm = _norm([g.detach() for g in grads]).item()
        lam, iters, resid = 0.0, 0, math.nan
        if self.power_iters > 0:
            lam, iters, resid = self._eigen(grads)
        samples = hutchinson_samples(grads, self.params, probes=self.probes, generator=self.generator) if self.probes else []
        tr = sum(samples) / len(samples) if samples else None
        se = (statistics.stdev(samples) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
        vals = torch.tensor([loss.item(), gnorm, lam, tr if tr is not None else 0.0], dtype=torch.float64)
        vals = distributed.all_reduce_mean(vals)  # identical probe batch on every rank: agree exactly
        return CurvatureEstimate(
            loss=vals[0].item(),
            grad_norm=vals[1].item(),
            lambda_max=vals[2].item(),
            trace=vals[3].item() if tr is not None else None,
            power_iters=iters,
            residual=resid,
            trace_se=se,
        )

    def state_dict(self) -> dict:
        return {"v": self.v, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.v = state.get("v")
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])

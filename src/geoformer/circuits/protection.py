"""Protecting circuits during training: per-element update scales, graduated zones, a canary monitor.

* :func:`zone_scales` turns per-element importance scores into update scales with graduated zones
  (core, support, context, free), e.g. 0.01x / 0.1x / 0.5x / 1x.
* :class:`UpdateScaler` attaches to *any* ``torch.optim.Optimizer`` through its step pre/post hooks and
  makes every step ``theta <- theta_old + s * (theta_opt - theta_old)`` element-wise (``torch.lerp``, so
  s = 1 leaves the optimizer's value bit-for-bit and s = 0 freezes the element). The optimizer, its
  ``state_dict`` and LR schedulers are untouched; the scales have their own ``state_dict``. Note the
  optimizer's moments still see the full gradient: this scales the *update*, not the gradient, which
  is what makes it optimizer-agnostic (the seed's theta - eta (I - M) grad L is the SGD special case).
* :class:`CanaryMonitor` re-scores capability suites every ``every`` steps against the scores it
  started with; on a drop beyond ``tol`` it restores the last accepted snapshot (parameters, buffers
  and optimizer state, bit-exactly), finds the elements that moved most in the rejected updates
  (or whose move raised the canary loss most, ``trace="attribution"``) and adds them to the
  protection mask.
  With ``repair=True`` it repairs before it protects: after a rollback the next window's updates have their
  component along the canary loss's gradient removed (when that component would raise the canary loss, as in
  A-GEM, Chaudhry et al. 2019); a second regression also halves the step, each further one halves it again,
  and only after ``max_retries`` retries does the mask grow. With ``progress`` (a score of the task being
  learned) a run whose progress has not risen by ``stall_min`` over ``stall_checks`` checks is marked stalled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

DEFAULT_ZONES = (("core", 0.01, 0.01), ("support", 0.04, 0.1), ("context", 0.15, 0.5))


def zone_scales(
    scores: dict[str, torch.Tensor],
    zones: tuple[tuple[str, float, float], ...] = DEFAULT_ZONES,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Graduated update scales from per-element importance ``scores`` (name -> tensor).

    ``zones`` lists ``(name, fraction, scale)`` from most to least important: the top ``fraction`` of
    all elements (ranked globally) gets the first scale, the next fraction the second, and so on;
    the rest get 1. With ``normalize`` each tensor's scores are divided by their mean first, so
    large tensors (embeddings) and small ones (gains) compete on their relative importance.
    """
    names = list(scores)
    flat = torch.cat(
        [(s / s.mean().clamp_min(1e-30) if normalize else s).flatten().float() for s in scores.values()]
    )
    order = flat.argsort(descending=True)
    out = torch.ones_like(flat)
    start = 0
    for _, frac, scale in zones:
        n = int(round(frac * flat.numel()))
        out[order[start : start + n]] = scale
        start += n
    res, i = {}, 0
    for name in names:
        k = scores[name].numel()
        res[name] = out[i : i + k].view_as(scores[name]).clone()
        i += k
    return res


def zone_counts(scales: dict[str, torch.Tensor]) -> dict[float, int]:
    """How many elements have each scale value."""
    v = torch.cat([s.flatten() for s in scales.values()])
    u, c = v.unique(return_counts=True)
    return {round(float(a), 6): int(b) for a, b in zip(u, c, strict=True)}


class UpdateScaler:
    """Scale each element's optimizer update: ``theta = lerp(theta_old, theta_opt, scale)``.

    ``scales`` maps parameter names (of ``model``) to tensors of the parameter's shape; parameters
    without an entry are updated normally. Works with any optimizer (hooks on ``optimizer.step``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scales: dict[str, torch.Tensor]):
        self.model, self.optimizer = model, optimizer
        self.params = dict(model.named_parameters())
        unknown = set(scales) - set(self.params)
        if unknown:
            raise KeyError(f"no such parameters: {sorted(unknown)[:3]}")
        self.scales = {k: v.detach().to(self.params[k]) for k, v in scales.items()}
        for k, v in self.scales.items():
            if v.shape != self.params[k].shape:
                raise ValueError(
                    f"scale for {k} has shape {tuple(v.shape)}, parameter {tuple(self.params[k].shape)}"
                )
        self._old: dict[str, torch.Tensor] = {}
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def _active(self):
        return [(k, s) for k, s in self.scales.items() if bool((s != 1).any())]

    def _pre(self, *_):
        self._old = {k: self.params[k].detach().clone() for k, _ in self._active()}

    @torch.no_grad()
    def _post(self, *_):
        for k, s in self._active():
            p = self.params[k]
            if k in self._old:
                p.copy_(torch.lerp(self._old[k], p, s))
        self._old = {}

    def protect(self, name: str, mask: torch.Tensor, scale: float) -> None:
        """Lower the scale of the elements of ``name`` where ``mask`` is true to at most ``scale``."""
        p = self.params[name]
        cur = self.scales.get(name, torch.ones_like(p))
        self.scales[name] = torch.where(mask.to(p.device), cur.clamp(max=scale), cur)

    def n_protected(self) -> int:
        return sum(int((s < 1).sum()) for s in self.scales.values())

    def state_dict(self) -> dict[str, Any]:
        return {"scales": {k: v.clone() for k, v in self.scales.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scales = {k: v.detach().clone().to(self.params[k]) for k, v in state["scales"].items()}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@dataclass
class RollbackEvent:
    step: int
    scores: dict[str, float]
    worst: str
    grown: int


@dataclass
class CanaryMonitor:
    """Every ``every`` steps, score the canaries; on a regression restore the snapshot and grow the mask.

    ``evaluate(model) -> {capability: score}`` (higher is better); a regression is any capability
    below ``reference - tol``, with ``reference`` the scores at :meth:`start`. Call :meth:`step` after
    each optimizer step; it returns True when it rolled back. ``grow_frac`` of all elements (the
    most-moved ones of the rejected update) get scale ``grow_scale`` in ``scaler`` (if given).
    ``canary_loss(model)`` is only needed for ``trace="attribution"``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    evaluate: Callable[[nn.Module], dict[str, float]]
    every: int = 25
    tol: float = 0.02
    scaler: UpdateScaler | None = None
    grow_frac: float = 0.005
    grow_scale: float = 0.01
    trace: str = "moved"  # or "attribution": elements whose move raised the canary loss most
    canary_loss: Callable[[nn.Module], torch.Tensor] | None = None
    repair: bool = False
    max_retries: int = 3
    progress: Callable[[nn.Module], float] | None = None
    stall_checks: int = 4
    stall_min: float = 0.01
    reference: dict[str, float] = field(default_factory=dict)
    events: list[RollbackEvent] = field(default_factory=list)
    checks: int = 0
    level: int = 0  # repair level: 0 plain, 1 canary-gradient projection, k >= 2 also steps x 0.5^(k-1)
    retries: int = 0
    grows: int = 0
    stalled_at: int | None = None

    def __post_init__(self) -> None:
        if self.trace not in ("moved", "attribution"):
            raise ValueError(f"trace must be 'moved' or 'attribution', got {self.trace!r}")
        if self.trace == "attribution" and self.canary_loss is None:
            raise ValueError("trace='attribution' needs canary_loss")
        if self.repair and self.canary_loss is None:
            raise ValueError("repair=True needs canary_loss (its gradient is removed from retried updates)")
        self._snap: dict[str, Any] | None = None
        self._guide: dict[str, torch.Tensor] | None = None  # canary-loss gradient for the repair projection
        self._old: dict[str, torch.Tensor] = {}
        self._progress: list[float] = []
        self._handles = []
        if self.repair:
            self._handles = [self.optimizer.register_step_pre_hook(self._pre),
                             self.optimizer.register_step_post_hook(self._post)]  # fmt: skip

    def start(self) -> dict[str, float]:
        self.reference = dict(self.evaluate(self.model))
        self.snapshot()
        return self.reference

    def snapshot(self) -> None:
        """Keep an in-memory copy of parameters, buffers and optimizer state."""
        self._snap = {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict(keep_vars=True).items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    @torch.no_grad()
    def restore(self) -> None:
        """Put parameters, buffers and optimizer state back exactly as at the last snapshot."""
        if self._snap is None:
            raise RuntimeError("no snapshot taken (call start() first)")
        for k, v in self.model.state_dict(keep_vars=True).items():
            v.data.copy_(self._snap["model"][k])
        self.optimizer.load_state_dict(copy.deepcopy(self._snap["optimizer"]))

    def _blame(self) -> dict[str, torch.Tensor]:
        snap = self._snap["model"]  # type: ignore[index]
        named = dict(self.model.named_parameters())
        delta = {k: (p.detach() - snap[k]) for k, p in named.items()}
        if self.trace == "moved":
            return {k: d.abs() for k, d in delta.items()}
        self.model.zero_grad(set_to_none=True)
        self.canary_loss(self.model).backward()  # type: ignore[misc]
        # first-order: loss(theta) - loss(theta_snap) ~ g . delta; positive terms did the damage
        out = {k: (p.grad * delta[k]).clamp_min(0) if p.grad is not None else torch.zeros_like(p)
               for k, p in named.items()}  # fmt: skip
        self.model.zero_grad(set_to_none=True)
        return out

    def _canary_grad(self) -> dict[str, torch.Tensor]:
        named = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        was = self.model.training
        self.model.eval()
        grads = torch.autograd.grad(self.canary_loss(self.model), list(named.values()), allow_unused=True)  # type: ignore[misc]
        self.model.train(was)
        return {k: (g if g is not None else torch.zeros_like(p)).detach()
                for (k, p), g in zip(named.items(), grads, strict=True)}  # fmt: skip

    def _pre(self, *_):
        if self.level > 0:
            self._old = {k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def _post(self, *_):
        if self.level == 0 or not self._old:
            return
        named = dict(self.model.named_parameters())
        delta = {k: named[k] - old for k, old in self._old.items()}
        delta = repair_update(delta, self._guide or {}, 0.5 ** max(0, self.level - 1))
        for k, old in self._old.items():
            named[k].copy_(old + delta[k])
        self._old = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _grow(self, blame: dict[str, torch.Tensor]) -> int:
        if self.scaler is None:
            return 0
        flat = torch.cat([b.flatten() for b in blame.values()])
        k = max(1, int(self.grow_frac * flat.numel()))
        thresh = flat.topk(k).values[-1]
        grown = 0
        for name, b in blame.items():
            mask = (b >= thresh) & (b > 0)
            if mask.any():
                self.scaler.protect(name, mask, self.grow_scale)
                grown += int(mask.sum())
        return grown

    def step(self, step: int) -> bool:
        if self._snap is None:
            self.start()
        if step % self.every:
            return False
        self.checks += 1
        scores = self.evaluate(self.model)
        drops = {k: self.reference[k] - v for k, v in scores.items() if k in self.reference}
        worst = max(drops, key=drops.get) if drops else ""
        if self.progress is not None:
            self._track_progress(step)
        if not drops or drops[worst] <= self.tol:
            self.snapshot()
            if self.repair and self.level > 0:
                self._guide = self._canary_grad()  # the direction to avoid, at the accepted state
            return False
        blame = self._blame()
        self.restore()
        grown = 0
        if self.repair and self.level < self.max_retries:
            self.level += 1
            self.retries += 1
            self._guide = self._canary_grad()
        else:
            grown = self._grow(blame)
            self.grows += 1
        self.events.append(RollbackEvent(step, scores, worst, grown))
        return True

    def _track_progress(self, step: int) -> None:
        self._progress.append(float(self.progress(self.model)))  # type: ignore[misc]
        k = self.stall_checks
        if self.stalled_at is None and len(self._progress) > k:
            if max(self._progress[-k:]) < max(self._progress[:-k]) + self.stall_min:
                self.stalled_at = step

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly: the reference scores, the accepted snapshot, the repair
        level and its guide, the counters, the rollbacks and the progress history (tensors and plain values)."""
        return {"reference": dict(self.reference), "snap": self._snap, "guide": self._guide, "checks": self.checks,
                "level": self.level, "retries": self.retries, "grows": self.grows, "stalled_at": self.stalled_at,
                "progress": list(self._progress), "events": [e.__dict__ for e in self.events]}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference = dict(state["reference"])
        self._snap, self._guide = state["snap"], state["guide"]
        self.checks, self.level, self.retries, self.grows = (int(state[k]) for k in ("checks", "level", "retries", "grows"))
        self.stalled_at = state["stalled_at"]
        self._progress = list(state["progress"])
        self.events = [RollbackEvent(**e) for e in state["events"]]

    def summary(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "rollbacks": len(self.events),
            "protected": self.scaler.n_protected() if self.scaler else 0,
            "retries": self.retries,
            "grows": self.grows,
            "repair_level": self.level,
            "stalled": self.stalled_at is not None,
            "stalled_at": self.stalled_at,
            "events": [e.__dict__ for e in self.events],
        }


def repair_update(
    delta: dict[str, torch.Tensor], guide: dict[str, torch.Tensor], scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """``scale * (d - max(0, g.d) / |g|^2 g)`` over all parameters together (A-GEM's projection with the
    canary loss's gradient ``g``): the first-order change of the canary loss is then never positive."""
    keys = [k for k in delta if k in guide]
    dot = sum((guide[k] * delta[k]).sum() for k in keys) if keys else torch.zeros(())
    gg = sum(guide[k].square().sum() for k in keys) if keys else torch.zeros(())
    coef = float(dot / gg) if keys and float(gg) > 0 and float(dot) > 0 else 0.0
    return {k: scale * (d - coef * guide[k] if coef and k in guide else d) for k, d in delta.items()}

"""A curvature-adaptive learning rate ("homotopy LR", seed 004), as a torch ``LRScheduler``.

Every ``interval`` steps a :class:`~geoformer.train.curvature.CurvatureProbe` measures the loss
curvature c on a fixed probe batch; an exponential moving average c_ema = d c_ema + (1 - d) c smooths
it, and each param group gets

    lr = clamp(base_lr / (1 + alpha * max(0, c_ema / c_target - 1)), min_lr, max_lr)

so lr never exceeds base_lr: it only drops while curvature sits above its target and rises back
toward base_lr as curvature falls (the seed's "automatic warmup" can only mean that).

c is the seed's kappa = ||H|| / ||g||^2 (``curvature="kappa"``), plain sharpness |lambda_max|
(``"sharpness"``), the Hutchinson trace (``"trace"``) or the seed's cheap proxy, the probe batch's gradient
norm ||g|| with no Hessian at all (``"grad_norm"``; set ``power_iters = 0`` and ``hutchinson_probes = 0``). c_target: ``target_mode="calibrate"``
(default) takes the median of the first ``calibration`` estimates and then holds it fixed (lr stays
at base_lr until then); ``"percentile"`` reproduces the seed: the ``percentile``-th percentile of the
last <= 1000 estimates, updated at every estimate. ``kappa_target`` > 0 fixes it by hand.
With ``per_group=True`` each param group gets its own probe and its own c (per-layer rates).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler

from geoformer.errors import GeoformerError
from geoformer.train.curvature import CurvatureEstimate, CurvatureProbe


@dataclass
class HomotopyOptions:
    interval: int = 200  # steps between estimates (overhead <= 5% on shakespeare_char: see docs)
    alpha: float = 1.0
    ema: float = 0.9
    curvature: str = "kappa"  # kappa | sharpness | trace | grad_norm
    kappa_target: float = 0.0  # > 0: fixed target; 0: from target_mode
    target_mode: str = "calibrate"  # calibrate | percentile
    calibration: int = 3  # estimates whose median becomes the target (calibrate mode)
    percentile: float = 75.0  # percentile mode
    eigen: str = "lanczos"  # lanczos (ARPACK on HVPs) | power (the write-up's power iteration)
    which: str = "LA"  # LA: the largest eigenvalue (PyHessian's lambda_max) | LM: the largest in magnitude
    power_iters: int = 30  # HVP budget per estimate (lanczos) or iterations (power); warm-started between estimates
    power_tol: float = 2e-2  # relative tolerance of the eigenvalue
    hutchinson_probes: int = 1  # 0 disables the trace estimate
    probe_batch: int = 4  # sequences in the dedicated probe batch
    per_group: bool = False
    min_lr: float = 1e-7
    max_lr: float = 1.0

    def validate(self) -> None:
        checks = [
            (self.interval >= 1, "interval must be >= 1"),
            (self.alpha >= 0, "alpha must be >= 0"),
            (0 <= self.ema < 1, "ema must be in [0, 1)"),
            (
                self.curvature in ("kappa", "sharpness", "trace", "grad_norm"),
                "curvature must be kappa, sharpness, trace or grad_norm",
            ),
            (self.target_mode in ("calibrate", "percentile"), "target_mode must be calibrate or percentile"),
            (self.eigen in ("lanczos", "power") and self.which in ("LA", "LM"), "eigen must be lanczos or power, which LA or LM"),
            (self.eigen != "lanczos" or self.power_iters == 0 or self.power_iters > 8,
             "lanczos needs power_iters > 8 (its Krylov space has 8 vectors), or 0 to skip the eigenvalue"),
            (
                self.calibration >= 1 and 0 < self.percentile <= 100,
                "calibration >= 1 and percentile in (0, 100]",
            ),
            (
                (self.power_iters >= 1 or self.curvature in ("grad_norm", "trace")) and self.power_iters >= 0
                and self.hutchinson_probes >= 0,
                "power_iters >= 1 (0 only with curvature grad_norm or trace), hutchinson_probes >= 0",
            ),
            (
                self.curvature != "trace" or self.hutchinson_probes > 0,
                "curvature=trace needs hutchinson_probes > 0",
            ),
            (
                self.probe_batch >= 1 and 0 < self.min_lr <= self.max_lr,
                "probe_batch >= 1, 0 < min_lr <= max_lr",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise GeoformerError(f"train.homotopy: {msg}")


class HomotopyLR(LRScheduler):
    """Curvature-adaptive lr for any torch optimizer; call ``step()`` after each ``optimizer.step()``.

    ``loss_fn`` evaluates the loss on a fixed probe batch (a closure over the model); the probe runs
    every ``opts.interval`` steps. ``state_dict``/``load_state_dict`` include the EMA, the target, the
    estimate history and the probes' warm-start vectors, so a resumed run continues the same lr sequence.

    >>> probe_x, probe_y = next_batch()                                   # doctest: +SKIP
    >>> sched = HomotopyLR(opt, lambda: model(probe_x, probe_y)[1])       # doctest: +SKIP
    >>> for x, y in batches:                                              # doctest: +SKIP
    ...     model(x, y)[1].backward(); opt.step(); opt.zero_grad(); sched.step()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[], torch.Tensor],
        opts: HomotopyOptions | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.opts = opts or HomotopyOptions()
        self.opts.validate()
        o = self.opts
        groups = optimizer.param_groups
        param_sets = (
            [g["params"] for g in groups] if o.per_group else [[p for g in groups for p in g["params"]]]
        )
        self.probes = [
            CurvatureProbe(
                loss_fn,
                ps,
                power_iters=o.power_iters,
                tol=o.power_tol,
                hutchinson_probes=o.hutchinson_probes,
                method=o.eigen,
                which=o.which,
                seed=i,
            )
            for i, ps in enumerate(param_sets)
        ]
        n = len(self.probes)
        self.ema: list[float | None] = [None] * n
        self.target: list[float | None] = [o.kappa_target if o.kappa_target > 0 else None] * n
        self.history: list[list[float]] = [[] for _ in range(n)]
        self.last_estimates: list[dict[str, float]] = [{} for _ in range(n)]
        self.n_estimates = 0
        super().__init__(optimizer, last_epoch)

    # -- the rule
    def _value(self, est: CurvatureEstimate) -> float:
        c = self.opts.curvature
        if c == "kappa":
            return est.kappa()
        if c == "sharpness":
            return abs(est.lambda_max)
        if c == "grad_norm":
            return est.grad_norm
        return est.trace if est.trace is not None else 0.0

    def _factor(self, i: int) -> float:
        ema, target = self.ema[i], self.target[i]
        if ema is None or target is None or target <= 0:
            return 1.0
        return 1.0 / (1.0 + self.opts.alpha * max(0.0, ema / target - 1.0))

    def get_lr(self) -> list[float]:
        o = self.opts
        out = []
        for gi, base in enumerate(self.base_lrs):
            f = self._factor(gi if o.per_group else 0)
            out.append(min(max(base * f, o.min_lr), o.max_lr))
        return out

    def _update_target(self, i: int) -> None:
        o, h = self.opts, self.history[i]
        if o.kappa_target > 0:
            return
        if o.target_mode == "calibrate":
            if self.target[i] is None and len(h) >= o.calibration:
                self.target[i] = statistics.median(h[: o.calibration])
        else:
            recent = sorted(h[-1000:])
            k = (len(recent) - 1) * o.percentile / 100.0
            lo, hi = int(k), min(int(k) + 1, len(recent) - 1)
            self.target[i] = recent[lo] + (recent[hi] - recent[lo]) * (k - lo)

    def estimate_now(self) -> None:
        """Probe curvature and update the EMA and target (called by ``step`` every ``interval`` steps)."""
        for i, probe in enumerate(self.probes):
            est = probe.estimate()
            c = self._value(est)
            self.history[i].append(c)
            self.ema[i] = c if self.ema[i] is None else self.opts.ema * self.ema[i] + (1 - self.opts.ema) * c
            self._update_target(i)
            self.last_estimates[i] = {
                **est.as_dict(),
                "curvature": c,
                "curvature_ema": self.ema[i],
                "curvature_target": self.target[i] or 0.0,
            }
        self.n_estimates += 1

    def step(self, epoch=None) -> None:  # noqa: D102  (torch API)
        # the lr is base_lr x a factor, set here: another scheduler changing it in between (ChainedScheduler)
        # would be erased or compounded, so that is refused instead of silently mis-scheduling
        last = getattr(self, "_last_lr", None)
        if epoch is None and last is not None and getattr(self, "_initial_step_done", False):
            now = [g["lr"] for g in self.optimizer.param_groups]
            if any(abs(a - b) > 1e-12 * max(abs(b), 1e-30) for a, b in zip(now, last, strict=False)):
                raise GeoformerError(
                    "HomotopyLR sets the lr itself (base lr x its curvature factor); another scheduler changed it "
                    "between steps (ChainedScheduler?): use HomotopyLR alone, or after a warmup in SequentialLR"
                )
        # last_epoch counts completed optimizer steps; probe before computing this step's lr
        if getattr(self, "_initial_step_done", False) and (self.last_epoch + 1) % self.opts.interval == 0:
            self.estimate_now()
        self._initial_step_done = True
        super().step()

    def _update_lr(self, epoch: int | None = None) -> None:
        # SequentialLR hands over at its milestone with _update_lr(0), bypassing step(): an optimizer step has
        # just completed there, so the probe due before the takeover lr runs here (the next one `interval` later)
        if epoch is not None and getattr(self, "_initial_step_done", False):
            self.estimate_now()
        super()._update_lr(epoch)

    def metrics(self) -> dict[str, float]:
        """The latest estimates (group 0, or g<i>/... per group) and the current lr, for metrics.jsonl."""
        out: dict[str, float] = {}
        for i, est in enumerate(self.last_estimates):
            prefix = f"g{i}/" if len(self.last_estimates) > 1 else ""
            out.update({f"{prefix}{k}": v for k, v in est.items()})
        return out

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "probes", "opts")}
        state["probes"] = [p.state_dict() for p in self.probes]
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        for p, s in zip(self.probes, state.pop("probes", []), strict=False):
            p.load_state_dict(s)
        self.__dict__.update(state)

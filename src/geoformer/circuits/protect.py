"""``train.callbacks = ["protect"]``: continual learning for any preset, through the Trainer.

A run that starts from another run's weights (``train.init_from``; ``data.tokenizer_from`` when the new text
is another corpus) and trains on new text B can keep what the first run learned on text A:

* ``train.protect.method = "subspace"``: Gradient Projection Memory (:mod:`geoformer.circuits.subspace`): the
  span of A's inputs to every block's linear layers (energy ``threshold``) is computed once, from
  ``samples`` windows of A, before the first step; every optimizer update is projected out of it;
* ``"replay"``: ``round(replay_mix * batch)`` rows of every micro-batch are replaced by windows of A
  (:class:`~geoformer.circuits.replay.ReplayBuffer`, ``samples`` windows drawn once);
* ``"subspace+replay"``: both;
* ``"ewc"``: elastic weight consolidation (:mod:`geoformer.circuits.ewc`): the diagonal empirical Fisher of A's
  ``samples`` windows at the start weights theta_A, scaled by its mean entry, and the penalty
  ``ewc_lambda / 2 * sum_i F_i (theta_i - theta_A,i)^2`` added to the loss of every training micro-batch (its
  gradient enters through parameter hooks, before clipping, exactly as if the penalty were part of the loss);
* ``"none"``: no protection, only the measurement (the naive baseline of a comparison, with its forgetting logged).

``train.callbacks = ["protect", "canary"]`` adds :class:`Canary`: a check of A's loss every ``canary_every`` steps
that rolls back (and, with ``canary_repair``, retries with repaired updates) when A regresses.

A is ``train.protect.data`` (a corpus source, as ``data.source``), encoded with this run's tokenizer; its
first 90% gives the protection windows and the buffer, its last 10% the held-out windows whose loss is logged
as ``protect_a_loss`` at every evaluation, so forgetting shows in ``metrics.jsonl``; the summary adds the loss
on A at the start and end (``protect_a_forgetting`` = end - start, nats per token).

Subspace protection covers every block (``layers = "all"``) or only A's circuit (``layers = "circuit"``): the
heads whose mean-ablation raises the next-token loss on A's protection windows by at least ``head_threshold``
nats (:func:`~geoformer.circuits.attribution.head_loss_increase`, the text counterpart of the suites' accuracy
drop in ``geoformer circuits continual``); their q/k/v rows, their blocks' output projection and MLP are
projected, the other blocks train freely. The chosen heads and every head's loss increase go to the summary.
The bases are saved with the run's checkpoint, so a resumed run projects with the bases of its start, not
with ones recomputed from the half-trained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from geoformer.coerce import coerce_dataclass
from geoformer.errors import GeoformerError
from geoformer.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from geoformer.train.trainer import Trainer

METHODS = ("none", "subspace", "replay", "subspace+replay", "ewc")
HELD_OUT = 0.1  # the last fraction of A: held-out windows for protect_a_loss


@dataclass
class ProtectOptions:
    data: str = ""  # capability A's text: "shakespeare", a file or a folder (required)
    method: str = "subspace"  # none | subspace | replay | subspace+replay
    threshold: float = 0.97  # GPM energy threshold of the protected span (0, 1]
    norms: str = "frozen"  # norm gains: frozen | free
    samples: int = 64  # windows of A (block_size tokens each) for the bases and the replay buffer
    replay_mix: float = 0.25  # fraction of every micro-batch replaced by A's windows (replay methods)
    ewc_lambda: float = 1.0  # EWC strength, relative to the mean Fisher entry (method ewc)
    eval_windows: int = 16  # held-out windows of A whose mean loss is protect_a_loss
    layers: str = "all"  # subspace methods: all blocks, or "circuit": the heads A's loss depends on (and their blocks)
    head_threshold: float = 0.05  # layers = "circuit": a head is A's if its mean-ablation costs A this many nats
    seed: int = 0  # draws of the windows and of the replay rows
    # the "canary" callback (train.callbacks = ["protect", "canary"]): every canary_every steps the loss on A's
    # protection windows is checked; a rise above its start by more than canary_tol (nats) rolls the model and
    # the optimizer back to the last accepted check, then (canary_repair) retries with the canary gradient's
    # component removed from the updates, then also halved, up to canary_retries times
    canary_every: int = 50
    canary_tol: float = 0.05
    canary_repair: bool = True
    canary_retries: int = 3

    def validate(self) -> ProtectOptions:
        checks = [
            (bool(self.data), 'train.protect.data is required: the text whose skill is kept (e.g. "shakespeare")'),
            (self.method in METHODS, f"train.protect.method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (0.0 < self.threshold <= 1.0, f"train.protect.threshold must be in (0, 1], got {self.threshold}"),
            (self.norms in ("frozen", "free"), f"train.protect.norms must be frozen or free, got {self.norms!r}"),
            (self.samples >= 1, f"train.protect.samples must be >= 1, got {self.samples}"),
            (0.0 <= self.replay_mix < 1.0, f"train.protect.replay_mix must be in [0, 1), got {self.replay_mix}"),
            (math.isfinite(self.ewc_lambda) and self.ewc_lambda >= 0,
             f"train.protect.ewc_lambda must be a finite number >= 0, got {self.ewc_lambda}"),
            (self.layers in ("all", "circuit"), f"train.protect.layers must be all or circuit, got {self.layers!r}"),
            (self.layers == "all" or self.subspace,
             f"train.protect.layers = circuit chooses the layers of subspace protection; method {self.method!r} "
             "projects no layers (use subspace or subspace+replay)"),
            (math.isfinite(self.head_threshold) and self.head_threshold > 0,
             f"train.protect.head_threshold must be a finite number > 0 (nats), got {self.head_threshold}"),
            (self.eval_windows >= 1, f"train.protect.eval_windows must be >= 1, got {self.eval_windows}"),
            (self.canary_every >= 1, f"train.protect.canary_every must be >= 1, got {self.canary_every}"),
            (self.canary_tol >= 0, f"train.protect.canary_tol must be >= 0 (nats), got {self.canary_tol}"),
            (self.canary_retries >= 0, f"train.protect.canary_retries must be >= 0, got {self.canary_retries}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise GeoformerError(msg)
        return self

    @property
    def subspace(self) -> bool:
        return "subspace" in self.method

    @property
    def replay(self) -> bool:
        return "replay" in self.method

    @property
    def ewc(self) -> bool:
        return self.method == "ewc"


def options(cfg) -> ProtectOptions:
    return coerce_dataclass(ProtectOptions, cfg.train.protect, where="train.protect").validate()


def ewc_fisher(model, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
    """The diagonal empirical Fisher of the windows ``(x, y)`` (one window = one example, its mean token
    log-likelihood), divided by its mean entry, and that mean: lambda then means the same across runs."""
    import torch.nn.functional as F

    from geoformer.circuits.ewc import fisher_diag

    def log_likelihood(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out, t)

    fisher = fisher_diag(model, x, log_likelihood, y)
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-30)
    return {k: f / mean for k, f in fisher.items()}, float(mean)


class EWCHooks:
    """The gradient of :class:`~geoformer.circuits.ewc.EWC`'s penalty, ``lam * F * (theta - anchor) / grad_accum``,
    added to every parameter's gradient of a training micro-batch through tensor hooks (so it is clipped with the
    loss's, as if it were part of it). ``active`` is on only between a step's first micro-batch and its optimizer
    step: gradients computed for anything else (a canary's repair direction) stay those of their own loss."""

    def __init__(self, model, ewc, grad_accum: int) -> None:
        self.model, self.ewc = model, ewc
        self.active = False
        scale = ewc.lam / grad_accum
        self.handles = []
        for name, p in model.named_parameters():
            if name in ewc.fisher and p.requires_grad:
                f, a = ewc.fisher[name].to(p), ewc.anchor[name].to(p)
                self.handles.append(p.register_hook(
                    lambda g, p=p, f=f, a=a: g + scale * f * (p.detach() - a) if self.active else g))  # fmt: skip

    @torch.no_grad()
    def penalty(self) -> float:
        """``lam / 2 * sum_i F_i (theta_i - anchor_i)^2`` at the current weights."""
        return float(self.ewc.penalty(self.model))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def a_windows(tokens, block: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (input, target) windows of ``block`` tokens from the token array ``tokens``, seeded."""
    from geoformer.data import sample_batch

    if len(tokens) <= block + 1:
        raise GeoformerError(
            f"train.protect.data is too short: {len(tokens)} tokens in a split, a window needs {block + 2}"
        )
    return sample_batch(tokens, n, block, torch.Generator().manual_seed(seed))


@register_callback("protect")
class Protect(Callback):
    """See the module docstring; options under ``train.protect``."""

    @classmethod
    def check_config(cls, cfg) -> None:
        options(cfg)

    def __init__(self, cfg) -> None:
        from geoformer.data import load_text

        self.opts = options(cfg)
        # read now, while the Trainer is being built: a bad train.protect.data fails before the run folder exists
        self.text = load_text(self.opts.data)
        self.projector = None
        self._pending = None
        self.saved_bases: list[dict[str, Any]] | None = None  # from a checkpoint (resume)
        self.bases: list[dict[str, Any]] = []
        self.buffer = None
        self.ewc: EWCHooks | None = None
        self.saved_ewc: dict[str, Any] | None = None  # Fisher and anchor from a checkpoint (resume)
        self.ewc_state: dict[str, Any] = {}
        self.circuit: dict[str, Any] = {}  # layers = "circuit": the chosen heads and every head's loss increase
        self.start_loss = math.nan
        self._micro = 0

    # ---------------------------------------------------------------- setup
    def _a_tokens(self, trainer: Trainer):
        import numpy as np

        ids = trainer.data.tokenizer.encode_array(self.text)
        cut = int(len(ids) * (1 - HELD_OUT))
        return np.asarray(ids[:cut]), np.asarray(ids[cut:])

    def on_train_start(self, trainer: Trainer) -> None:
        from geoformer.circuits.replay import ReplayBuffer
        from geoformer.circuits.subspace import Protected, SubspaceProjector, gpt_protection

        o, block = self.opts, trainer.cfg.model.block_size
        train_ids, held_ids = self._a_tokens(trainer)
        self.train_ids = train_ids
        x, y = a_windows(train_ids, block, o.samples, o.seed)
        self.windows = (x, y)  # the windows the bases and the buffer come from
        self.held = tuple(t.to(trainer.device) for t in a_windows(held_ids, block, o.eval_windows, o.seed + 1))
        if o.replay:
            self.buffer = ReplayBuffer(x, y, o.replay_mix, o.seed)
        if o.subspace:
            if self.saved_bases is not None:
                prot = [Protected(b["param"], b["basis"], b["rows"], b["source"]) for b in self.saved_bases]
            else:
                try:
                    heads = self._circuit(trainer, x, y) if o.layers == "circuit" else None
                    prot = gpt_protection(trainer.raw_model, x.to(trainer.device), threshold=o.threshold,
                                          layers=o.layers, heads=heads, norms=o.norms, pad=None)  # fmt: skip
                except (AttributeError, KeyError) as e:
                    raise GeoformerError(
                        f"train.protect: subspace protection needs the GPT's layer layout ({e}); use method=replay"
                    ) from None
            self.bases = [{"param": p.param, "basis": p.basis, "rows": p.rows, "source": p.source} for p in prot]
            self._pending = lambda: SubspaceProjector(trainer.raw_model, trainer.optimizer, prot)
        if o.ewc:
            if self.saved_ewc is not None:  # resumed: the Fisher and the anchor of the run's start, not of now
                self.ewc_state = self.saved_ewc
            else:
                fisher, mean = ewc_fisher(trainer.raw_model, x.to(trainer.device), y.to(trainer.device))
                anchor = {k: p.detach().clone() for k, p in trainer.raw_model.named_parameters() if k in fisher}
                self.ewc_state = {"fisher": fisher, "anchor": anchor, "fisher_mean": mean}
            from geoformer.circuits.ewc import EWC

            ewc = EWC(trainer.raw_model, self.ewc_state["fisher"], o.ewc_lambda, anchor=self.ewc_state["anchor"])
            self.ewc = EWCHooks(trainer.raw_model, ewc, trainer.cfg.train.grad_accum)

    def _circuit(self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, int]]:
        """A's heads: mean-ablation loss increase on the protection windows >= head_threshold (at least one)."""
        from geoformer.circuits.attribution import head_loss_increase
        from geoformer.circuits.subspace import circuit_heads

        rise = head_loss_increase(trainer.raw_model, x.to(trainer.device), y.to(trainer.device), mode="mean")
        heads = circuit_heads(rise.unsqueeze(-1), self.opts.head_threshold)
        self.circuit = {"heads": [list(h) for h in heads], "head_loss_increase": rise.tolist()}
        return heads

    def on_before_optimizer_step(self, trainer: Trainer, step: int) -> None:
        if self.ewc is not None:
            self.ewc.active = False  # the step's micro-batches are done
        # the projector's optimizer hooks go on last, at the first step, so that every other hook on the
        # optimizer (a canary's repair) runs before it and the update finally applied keeps dW U = 0
        if self.projector is None and self._pending is not None:
            self.projector, self._pending = self._pending(), None

    # ---------------------------------------------------------------- hooks
    def on_batch(self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ewc is not None:
            self.ewc.active = True  # this micro-batch's backward gets the penalty's gradient
        if self.buffer is None:
            return x, y
        k = self.buffer.count(x.shape[0])
        self._micro += 1
        if k == 0:
            return x, y
        bx, by = self.buffer.draw(k, trainer.step * trainer.cfg.train.grad_accum + self._micro)
        x, y = x.clone(), y.clone()
        x[:k], y[:k] = bx.to(x.device), by.to(y.device)
        return x, y

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        self._micro = 0

    @torch.no_grad()
    def a_loss(self, trainer: Trainer) -> float:
        from geoformer.models import eval_mode

        with eval_mode(trainer.raw_model) as model, trainer.autocast():
            _, loss = model(*self.held)
        return float(loss)

    def on_eval(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        record["protect_a_loss"] = self.a_loss(trainer)
        if self.ewc is not None:
            record["protect_ewc_penalty"] = self.ewc.penalty()
        if not math.isfinite(self.start_loss):
            self.start_loss = record["protect_a_loss"]

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        end = self.a_loss(trainer)
        summary.update(protect_a_loss_start=self.start_loss, protect_a_loss_end=end,
                       protect_a_forgetting=end - self.start_loss, protect_method=self.opts.method)  # fmt: skip
        if self.bases:
            dims = [int(b["basis"].shape[1]) for b in self.bases if b["basis"] is not None]
            summary["protect_basis_dims"] = dims
        if self.circuit:
            summary["protect_heads"] = self.circuit["heads"]
            summary["protect_head_loss_increase"] = self.circuit["head_loss_increase"]
        if self.ewc is not None:
            summary.update(protect_ewc_penalty=self.ewc.penalty(), protect_fisher_mean=self.ewc_state["fisher_mean"])
            self.ewc.remove()

    def state_dict(self) -> dict[str, Any]:
        return {"bases": self.bases, "start_loss": self.start_loss, "ewc": self.ewc_state, "circuit": self.circuit}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved_bases = state.get("bases") or None
        self.saved_ewc = state.get("ewc") or None
        self.circuit = state.get("circuit") or {}
        self.start_loss = float(state.get("start_loss", math.nan))


def _protect_of(trainer: Trainer) -> Protect:
    for cb in trainer.callbacks:
        if isinstance(cb, Protect):
            return cb
    raise GeoformerError('the "canary" callback needs "protect" in train.callbacks (it guards the same text A)')


@register_callback("canary")
class Canary(Callback):
    """A canary on the text of ``train.protect.data``: :class:`~geoformer.circuits.protection.CanaryMonitor`
    scoring minus the loss on ``samples`` windows of A's training part (drawn apart from the protection and
    replay windows, with seed + 2) every ``canary_every`` steps; a rise beyond
    ``canary_tol`` nats restores the last accepted model and optimizer state bit-exactly, and with
    ``canary_repair`` the following updates lose their component along the canary loss's gradient (A-GEM's
    projection), then are also halved. Counts of checks, rollbacks and retries go to the summary; a run whose
    B loss (on a fixed training batch) stops falling over 4 checks is reported as stalled."""

    @classmethod
    def check_config(cls, cfg) -> None:
        names = cfg.train.callbacks
        if "protect" not in names or names.index("protect") > names.index("canary"):
            raise GeoformerError('the "canary" callback needs "protect" before it in train.callbacks '
                                 '(it guards the text A, whose windows "protect" draws)')  # fmt: skip
        options(cfg)

    def __init__(self, cfg) -> None:
        self.opts = options(cfg)
        self.monitor = None
        self.saved: dict[str, Any] | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        from geoformer.circuits.protection import CanaryMonitor
        from geoformer.models import eval_mode

        prot, o = _protect_of(trainer), self.opts
        # windows of their own (another seed), not the replay buffer's: a canary on the replayed windows sees only
        # what replay memorised (measured: no rollback while the held-out A loss rose 1.3 nats)
        self.windows = a_windows(prot.train_ids, trainer.cfg.model.block_size, o.samples, o.seed + 2)
        xa, ya = (t.to(trainer.device) for t in self.windows)
        gen = torch.Generator().manual_seed(trainer.cfg.seed + 5)
        from geoformer.data import sample_batch

        xb, yb = (t.to(trainer.device) for t in sample_batch(trainer.data.train, 8, trainer.cfg.model.block_size, gen))

        def loss_on(model, x, y):
            return model(x, y)[1]

        def scores(model):
            with torch.no_grad(), eval_mode(model) as m:
                return {"A": -float(loss_on(m, xa, ya))}

        def progress(model):
            with torch.no_grad(), eval_mode(model) as m:
                return -float(loss_on(m, xb, yb))

        self.monitor = CanaryMonitor(trainer.raw_model, trainer.optimizer, scores, every=o.canary_every,
                                     tol=o.canary_tol, repair=o.canary_repair, max_retries=o.canary_retries,
                                     canary_loss=lambda m: loss_on(m, xa, ya), progress=progress)  # fmt: skip
        if self.saved is not None:  # resumed: the reference, the accepted state and the repair level come back
            self.monitor.load_state_dict(self.saved)
        else:
            self.monitor.start()

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        if self.monitor is not None:
            self.monitor.step(step)

    def on_eval(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        if self.monitor is not None:
            record["canary_rollbacks"] = len(self.monitor.events)

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        m = self.monitor
        summary.update(canary_checks=m.checks, canary_rollbacks=len(m.events), canary_retries=m.retries,
                       canary_repair_level=m.level, canary_stalled=m.stalled_at is not None,
                       canary_stalled_at=m.stalled_at)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict() if self.monitor is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = state or None

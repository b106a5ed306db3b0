"""Learning-rate schedules by name, as torch ``LRScheduler`` objects.

Each factory takes ``(optimizer, train_cfg)`` and returns a scheduler that the trainer steps once per
optimizer step; the value at step ``it`` multiplies each param group's base lr. Users can use them in
their own loops like any torch scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from geoformer.coerce import coerce_dataclass
from geoformer.errors import GeoformerError

Factory = Callable[[torch.optim.Optimizer, object], LRScheduler]
_SCHEDULES: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        _SCHEDULES[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(_SCHEDULES)


def get(name: str) -> Factory:
    try:
        return _SCHEDULES[name]
    except KeyError:
        raise GeoformerError(f"unknown schedule {name!r}; known schedules: {', '.join(names())}") from None


def build(name: str, optimizer: torch.optim.Optimizer, train_cfg, trainer=None) -> LRScheduler:
    """The schedule ``name``; schedules that need the model or data (``homotopy``) read them from ``trainer``."""
    fn = get(name)
    return (
        fn(optimizer, train_cfg, trainer=trainer)
        if getattr(fn, "needs_trainer", False)
        else fn(optimizer, train_cfg)
    )


def warmup_cosine_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT's schedule: linear warmup lr*(it+1)/(warmup+1), then cosine from lr to min_lr at decay_iters."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup) / max(1, decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def _relative(fn: Callable[[int], float], base: float) -> Callable[[int], float]:
    return lambda it: fn(it) / base


@register("constant")
def constant(optimizer, t) -> LRScheduler:
    """lr = train.lr throughout."""
    return LambdaLR(optimizer, lambda it: 1.0)


@register("cosine")
def cosine(optimizer, t) -> LRScheduler:
    """Cosine from train.lr to train.min_lr over train.max_iters, no warmup."""
    return LambdaLR(
        optimizer, _relative(lambda it: warmup_cosine_lr(it, t.lr, t.min_lr, 0, t.max_iters), t.lr)
    )


@register("warmup_cosine")
def warmup_cosine(optimizer, t) -> LRScheduler:
    """Linear warmup over train.warmup_iters, then cosine to train.min_lr at train.max_iters (nanoGPT)."""
    return LambdaLR(
        optimizer,
        _relative(lambda it: warmup_cosine_lr(it, t.lr, t.min_lr, t.warmup_iters, t.max_iters), t.lr),
    )


@register("homotopy")
def homotopy(optimizer, t, trainer=None) -> LRScheduler:
    """Curvature-adaptive lr (:class:`geoformer.train.homotopy.HomotopyLR`) with options from train.homotopy.

    The probe batch is ``probe_batch`` training sequences drawn once from a generator seeded with
    seed + 2 (the same on every rank); the probe runs in eval mode, so it draws no dropout masks and
    the training RNG stream is untouched.
    """
    from geoformer.data import sample_batch
    from geoformer.train.homotopy import HomotopyLR, HomotopyOptions

    if trainer is None:
        raise GeoformerError(
            "the homotopy schedule needs the model: build HomotopyLR(optimizer, loss_fn) directly"
        )
    opts = coerce_dataclass(HomotopyOptions, t.homotopy, where="train.homotopy")
    gen = torch.Generator().manual_seed(trainer.cfg.seed + 2)
    x, y = sample_batch(trainer.data.train, opts.probe_batch, trainer.cfg.model.block_size, gen)
    x, y = x.to(trainer.device), y.to(trainer.device)

    from geoformer.models.gpt import eval_mode

    def loss_fn() -> torch.Tensor:
        with eval_mode(trainer.raw_model) as model:
            return model(x, y)[1]

    return HomotopyLR(optimizer, loss_fn, opts)


homotopy.needs_trainer = True

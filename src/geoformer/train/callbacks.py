"""Trainer callbacks: the hooks later features hang on (curvature probes, circuit protection, diagnostics).

Every hook is optional. ``on_eval`` may add numeric entries to the metrics record that goes to
``metrics.jsonl``; ``state_dict``/``load_state_dict`` make a callback resumable with the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from geoformer.train.trainer import Trainer


class Callback:
    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise a one-line GeoformerError when the run config holds bad options for this callback (called by
        ``config.validate`` for every name in ``train.callbacks``, before anything runs)."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_batch(self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training micro-batch about to be used; return it, or another one (replay mixes rehearsal rows in)."""
        return x, y

    def on_before_optimizer_step(self, trainer: Trainer, step: int) -> None:
        """Gradients are ready (clipped) and not yet applied: masks and probes go here."""

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None: ...

    def on_eval(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        """``record`` is about to be logged; add numeric keys to it."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


_CALLBACKS: dict[str, type[Callback]] = {}


def register_callback(name: str):
    """Make a callback class available to configs as ``train.callbacks = ["name", ...]``.

    The class is constructed with the run's :class:`~geoformer.config.RunConfig` as its only argument.
    """

    def deco(cls: type[Callback]) -> type[Callback]:
        _CALLBACKS[name] = cls
        return cls

    return deco


def callback_class(name: str) -> type[Callback]:
    """The class registered under ``name`` (a one-line error naming the known ones otherwise)."""
    from geoformer.errors import GeoformerError

    _import_callback_modules()
    if name not in _CALLBACKS:
        raise GeoformerError(f"unknown callback {name!r}; known callbacks: {', '.join(sorted(_CALLBACKS))}")
    return _CALLBACKS[name]


def callback_names() -> list[str]:
    _import_callback_modules()
    return sorted(_CALLBACKS)


def build_callbacks(names: list[str], cfg) -> list[Callback]:
    return [callback_class(n)(cfg) for n in names]


def _import_callback_modules() -> None:
    """Callbacks live next to what they measure; importing these registers them."""
    import importlib

    for mod in CALLBACK_MODULES:
        importlib.import_module(mod)


# modules that register callbacks (append yours)
CALLBACK_MODULES: list[str] = [
    "geoformer.diagnostics.attention_stats",
    "geoformer.diagnostics.sharpness",
    "geoformer.circuits.protect",
]

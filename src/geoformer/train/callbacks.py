"""Trainer callbacks: the hooks later features hang on (curvature probes, circuit protection, diagnostics).

Every hook is optional. ``on_eval`` may add numeric entries to the metrics record that goes to
``metrics.jsonl``; ``state_dict``/``load_state_dict`` make a callback resumable with the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geoformer.train.trainer import Trainer


class Callback:
    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer, step: int) -> None:
        """Gradients are ready (clipped) and not yet applied: masks and probes go here."""

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None: ...

    def on_eval(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        """``record`` is about to be logged; add numeric keys to it."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

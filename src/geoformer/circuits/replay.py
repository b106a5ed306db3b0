"""Replay (rehearsal): a small fixed buffer of capability A's training examples mixed into B's batches.

The baseline continual-learning studies find strongest (e.g. Chaudhry et al. 2019, "On tiny episodic
memories in continual learning"). The buffer is drawn once from A's *train* split; each step replaces
``round(mix * batch_size)`` of the batch with buffer rows drawn uniformly (with replacement, from a
generator seeded by the step, so a run is reproducible and a resumed step draws the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geoformer.errors import GeoformerError


@dataclass
class ReplayBuffer:
    inputs: torch.Tensor  # (n, T) token ids
    targets: torch.Tensor  # (n, T)
    mix: float  # fraction of every batch taken from the buffer
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix < 1.0:
            raise GeoformerError(f"replay mix must be in [0, 1), got {self.mix}")
        if self.inputs.shape[0] < 1 or self.inputs.shape != self.targets.shape:
            raise GeoformerError("replay buffer needs at least one example, inputs and targets of one shape")

    def count(self, batch_size: int) -> int:
        """Buffer rows per batch of ``batch_size``."""
        return min(batch_size - 1, round(self.mix * batch_size)) if self.mix > 0 else 0

    def draw(self, k: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(self.inputs.shape[0], (k,), generator=g)
        return self.inputs[idx], self.targets[idx]


def buffer_from_suites(suites: dict, per_suite: int, mix: float, seed: int = 0) -> ReplayBuffer:
    """A buffer of the first ``per_suite`` examples of each suite (``Suite`` objects with inputs/targets)."""
    if per_suite < 1:
        raise GeoformerError(f"replay buffer size per suite must be >= 1, got {per_suite}")
    xs = [s.inputs[:per_suite] for s in suites.values()]
    ys = [s.targets[:per_suite] for s in suites.values()]
    return ReplayBuffer(torch.cat(xs), torch.cat(ys), mix, seed)

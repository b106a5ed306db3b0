"""Random training batches and fixed evaluation batches from a token array (nanoGPT's ``get_batch``).

Blocks are gathered with one fancy-index into the (memory-mapped) array, so only the sampled tokens
are read from disk and there is no Python loop over the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from geoformer.errors import GeoformerError


def sample_batch(
    arr: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random blocks: inputs ``x`` and targets ``y`` (``x`` shifted left by one token).

    Both are int64 CPU tensors of shape ``(batch_size, block_size)``; block starts come from
    ``torch.randint(len(arr) - block_size, ...)`` drawn from ``generator``, so a seeded generator
    gives the same batches on every machine.
    """
    if len(arr) <= block_size:
        raise GeoformerError(f"block size {block_size} needs more than {len(arr)} tokens to draw a batch")
    starts = torch.randint(len(arr) - block_size, (batch_size,), generator=generator).numpy()
    # (batch, block + 1): each row is one block plus the token after it
    index = starts[:, None] + np.arange(block_size + 1)
    blocks = torch.from_numpy(np.asarray(arr[index], dtype=np.int64))
    return blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous()


def fixed_batches(
    arr: np.ndarray, n_batches: int, batch_size: int, block_size: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` evaluation batches that depend only on ``seed``: every evaluation sees the same blocks.

    A dedicated generator keeps them independent of (and from disturbing) the training stream.
    """
    generator = torch.Generator().manual_seed(seed)
    return [sample_batch(arr, batch_size, block_size, generator) for _ in range(n_batches)]

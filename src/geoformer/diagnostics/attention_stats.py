"""Per-head attention statistics: how far each head is from uniform.

For a causal attention row beta_i over its n_i = i + 1 allowed keys:

- ``row_std``: the population standard deviation of beta_i over those keys, averaged over rows
  i >= 1 and the batch. 0 for a uniform row; sqrt(n - 1) / n for a one-hot row (0.12 at n = 64),
  so the seed's "sharp above 0.10" threshold is near the one-hot ceiling at the block sizes used here.
- ``entropy``: H(beta_i) / log(n_i), averaged the same way; 1 for uniform, 0 for one-hot.
- ``self_weight``: beta_ii, the weight a query puts on its own position, averaged the same way; 1 / n_i
  (mean 0.07 at T = 64) for uniform rows, 1 for a head that only attends to itself (a kind whose logits
  are maximal on the diagonal, like -KL, collapses to this as its temperature falls).

Attention kinds expose ``attention_weights(x) -> (B, H, T, T)`` and ``head_labels()``; the
``attn_stats`` callback probes a fixed validation batch at every evaluation and logs
``row_std/<layer>.<label>``-style entries, plus the mean per label (``row_std/l1`` etc.).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from geoformer.models.gpt import eval_mode
from geoformer.train.callbacks import Callback, register_callback


def row_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row_std, normalised entropy) per head from causal weights (B, H, T, T); both shaped (H,)."""
    B, H, T, _ = weights.shape
    n = torch.arange(1, T + 1, device=weights.device, dtype=weights.dtype)  # keys per row
    allowed = torch.ones(T, T, dtype=torch.bool, device=weights.device).tril()
    w = weights.masked_fill(~allowed, 0.0)
    mean = (1.0 / n)[:, None]  # rows sum to one
    dev = (w - mean).masked_fill(~allowed, 0.0)  # deviations over allowed keys only (no cancellation)
    std = (dev.square().sum(-1) / n).sqrt()  # (B, H, T)
    ent = -(w * w.clamp_min(1e-30).log()).sum(-1) / n.log().clamp_min(1e-30)
    rows = slice(1, None)  # row 0 has a single key: no spread to measure
    return std[..., rows].mean(dim=(0, 2)), ent[..., rows].mean(dim=(0, 2))


def self_weight(weights: torch.Tensor) -> torch.Tensor:
    """Mean diagonal weight beta_ii over rows i >= 1 and the batch, per head: (B, H, T, T) -> (H,)."""
    return weights.diagonal(dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2))


@torch.no_grad()
def attention_stats(model, x: torch.Tensor) -> dict[str, float]:
    """Run ``model`` on token ids ``x`` and return row_std / entropy per layer-head and per head label."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        blk.attn.register_forward_pre_hook(lambda mod, args, i=i: captured.__setitem__(i, args[0]))
        for i, blk in enumerate(model.blocks)
    ]
    try:
        with eval_mode(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, float] = {}
    by_label: dict[str, list[float]] = defaultdict(list)
    by_label_ent: dict[str, list[float]] = defaultdict(list)
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        if not hasattr(attn, "attention_weights"):
            continue
        w = attn.attention_weights(captured[i]).float()
        std, ent = row_stats(w)
        diag = self_weight(w)
        for h, label in enumerate(attn.head_labels()):
            out[f"row_std/L{i}.{h}.{label}"] = std[h].item()
            out[f"entropy/L{i}.{h}.{label}"] = ent[h].item()
            out[f"self_weight/L{i}.{h}.{label}"] = diag[h].item()
            by_label[label.split("#")[0]].append(std[h].item())
            by_label_ent[label.split("#")[0]].append(ent[h].item())
    for label, vals in by_label.items():
        out[f"row_std/{label}"] = sum(vals) / len(vals)
        out[f"entropy/{label}"] = sum(by_label_ent[label]) / len(by_label_ent[label])
    return out


@register_callback("attn_stats")
class AttentionStats(Callback):
    """Log per-head row_std and entropy on a fixed validation batch at each evaluation."""

    def __init__(self, cfg, rows: int = 4) -> None:
        self.rows = rows

    def on_eval(self, trainer, step: int, record: dict[str, Any]) -> None:
        x, _ = trainer.val_batches[0]
        record.update(attention_stats(trainer.raw_model, x[: self.rows].to(trainer.device)))

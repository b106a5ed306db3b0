"""Muon for the hidden matrices and AdamW for the rest, as one torch optimizer (modded-nanogpt's split).

``torch.optim.Muon`` (orthogonalised momentum, Newton-Schulz) only takes 2-D parameters, and is meant for the
hidden weight matrices of the blocks; embeddings, the tied head, norm gains and biases stay with AdamW.
:class:`MuonAdamW` holds both and exposes the union of their param groups (the very same group dicts), so an
lr scheduler that sets ``group["lr"]`` drives both, and ``state_dict`` / ``load_state_dict`` round-trip both.
Muon's step size is matched to AdamW's update RMS (``adjust_lr_fn = "match_rms_adamw"``: 0.2 sqrt(max(m, n))),
so one lr serves both halves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def muon_split(model: nn.Module, weight_decay: float) -> tuple[list[nn.Parameter], list[dict[str, Any]]]:
    """(hidden matrices for Muon, AdamW groups for the rest). Hidden = 2-D weights of modules under ``blocks``
    (attention and MLP projections); the tied embedding/head and every 1-D parameter go to AdamW."""
    hidden, seen = [], set()
    for name, p in model.named_parameters():
        if p.requires_grad and p.dim() == 2 and name.startswith("blocks."):
            hidden.append(p)
            seen.add(id(p))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    return hidden, [g for g in groups if g["params"]]


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, model: nn.Module, *, lr: float, betas: tuple[float, float], weight_decay: float,
                 momentum: float = 0.95) -> None:  # fmt: skip
        hidden, adam_groups = muon_split(model, weight_decay)
        self.muon = torch.optim.Muon(
            hidden, lr=lr, weight_decay=weight_decay, momentum=momentum, adjust_lr_fn="match_rms_adamw"
        )
        self.adamw = torch.optim.AdamW(adam_groups, lr=lr, betas=betas)
        for g in self.muon.param_groups:
            g["optimizer"] = "muon"
        for g in self.adamw.param_groups:
            g["optimizer"] = "adamw"
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})  # the same group dicts

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch API)
        loss = closure() if closure is not None else None
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
        # torch's load_state_dict builds new group dicts: share them again, or a scheduler would set a stale lr
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

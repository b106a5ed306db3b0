"""Elastic weight consolidation (Kirkpatrick et al. 2017) with a diagonal empirical Fisher.

After task A, ``F_i = mean_n (d log p(y_n | x_n; theta) / d theta_i)^2`` at ``theta_A`` (per-example
gradients through ``torch.func.vmap``, so no loop over examples); while training task B the loss is
``L_B(theta) + lambda / 2 * sum_i F_i (theta_i - theta_A,i)^2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from geoformer.models.gpt import eval_mode


def fisher_diag(
    model: nn.Module,
    inputs: torch.Tensor,
    log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over examples of the squared per-example gradient.

    ``log_likelihood(output, target)`` gets one example's model output (no batch dimension added by
    us: the model sees a batch of 1) and its target, and returns a scalar log-likelihood.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    with eval_mode(model):
        def ll(p, x, y):
            out = functional_call(model, p, (x[None],))
            out = out[0] if isinstance(out, tuple) else out
            return log_likelihood(out[0], y)

        per_ex = vmap(grad(ll), in_dims=(None, 0, 0))
        acc = {k: torch.zeros_like(v) for k, v in params.items()}
        n = inputs.size(0)
        for i in range(0, n, batch_size):
            g = per_ex(params, inputs[i : i + batch_size], targets[i : i + batch_size])
            for k in acc:
                acc[k] += g[k].pow(2).sum(0)
    return {k: v / n for k, v in acc.items()}


class EWC:
    """The EWC penalty ``lam / 2 * sum_i F_i (theta_i - anchor_i)^2`` for ``model``'s parameters."""

    def __init__(self, model: nn.Module, fisher: dict[str, torch.Tensor], lam: float,
                 anchor: dict[str, torch.Tensor] | None = None):  # fmt: skip
        """``anchor`` defaults to ``model``'s current parameters (theta_A); a resumed run passes the saved one."""
        self.lam = lam
        self.fisher = {k: v.detach().clone() for k, v in fisher.items()}
        params = dict(model.named_parameters())
        self.anchor = {k: (anchor[k] if anchor is not None else params[k]).detach().clone()
                       for k in self.fisher if k in params}  # fmt: skip

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = None
        for k, p in model.named_parameters():
            if k in self.fisher:
                t = (self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()
                total = t if total is None else total + t
        if total is None:
            return torch.zeros(())
        return 0.5 * self.lam * total

"""Pruning a trained GPT by four importance scores, structured (MLP neurons, attention heads) or not.

Units (any model with ``model.blocks[i].attn.{c_attn, c_proj, n_head}`` and
``model.blocks[i].mlp.{c_fc, c_proj}``: :class:`~geoformer.models.GPT` and ``LevelGPT``):

* ``neuron`` j of block l: row j of ``mlp.c_fc`` (and its bias) and column j of ``mlp.c_proj``.
* ``head`` h of block l: columns h*D .. (h+1)*D-1 of ``attn.c_proj`` (the head's whole contribution
  to the residual stream; its q, k, v rows then compute nothing that is used).
* ``weight``: single entries of the four block matrices (``attn.c_attn``, ``attn.c_proj``,
  ``mlp.c_fc``, ``mlp.c_proj``); embeddings, norms and the tied head are never pruned.

Scores (higher = more important; the lowest are pruned):

* ``magnitude``: |w| for a weight; the L2 norm of all of a unit's weights for a neuron or head.
* ``wanda`` (Sun et al. 2023): |W_ij| * ||X_j||_2, X_j the input channel j of that matrix over the
  calibration tokens; a neuron or head sums it over its input columns of the consuming matrix
  (``mlp.c_proj`` / ``attn.c_proj``): ||W[:, j]||_1 * ||X_j||_2.
* ``ablation``: the calibration-loss increase when the unit is zeroed, measured exactly for neurons
  and heads (batched: the blocks before the unit's block run once, then the hidden state is
  replicated once per unit in a chunk and each replica gets its own mask). For single weights an exact ablation per
  entry is out of reach, so ``ablation`` there is its first-order estimate |w * dL/dw|.
* ``random``: a seeded random score, the floor every real score should beat.

Neurons and heads are ranked globally across blocks; weights are ranked within each matrix
(uniform sparsity per matrix, as in magnitude and Wanda pruning). Masks are kept: ``prune`` returns
boolean keep-masks and ``apply_masks`` applies them, so a later fine-tune can re-apply them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer.errors import GeoformerError
from geoformer.models.gpt import eval_mode

UNITS = ("neuron", "head", "weight")
SCORES = ("magnitude", "wanda", "ablation", "random")
MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _check(unit: str, score: str | None = None) -> None:
    if unit not in UNITS:
        raise GeoformerError(f"unknown pruning unit {unit!r}; known: {', '.join(UNITS)}")
    if score is not None and score not in SCORES:
        raise GeoformerError(f"unknown pruning score {score!r}; known: {', '.join(SCORES)}")


def block_matrices(model: nn.Module) -> dict[str, nn.Linear]:
    """``{"blocks.<l>.<matrix>": Linear}`` for the four prunable matrices of every block."""
    out = {}
    for i, b in enumerate(model.blocks):
        for m in MATRICES:
            out[f"blocks.{i}.{m}"] = b.get_submodule(m)
    return out


def _head_dim(attn: nn.Module) -> int:
    return attn.c_proj.in_features // attn.n_head


def n_units(model: nn.Module, unit: str) -> tuple[int, int]:
    """(blocks, units per block) for ``neuron`` or ``head``."""
    b = model.blocks[0]
    per = b.mlp.c_fc.out_features if unit == "neuron" else b.attn.n_head
    return len(model.blocks), per


@torch.no_grad()
def eval_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy over ``batches`` in eval mode (the model's mode is restored)."""
    total, n = 0.0, 0
    with eval_mode(model):
        for x, y in batches:
            logits, _ = model(x)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()))
            n += 1
    return total / max(n, 1)


@torch.no_grad()
def input_norms(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """||X_j||_2 over all calibration tokens, for every input channel j of every block matrix."""
    sq: dict[str, torch.Tensor] = {}
    hooks = []
    for name, lin in block_matrices(model).items():

        def hook(mod, args, name=name):
            a = args[0].detach().float().flatten(0, -2)
            sq[name] = sq.get(name, 0) + a.square().sum(0)

        hooks.append(lin.register_forward_pre_hook(hook))
    try:
        with eval_mode(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {k: v.sqrt() for k, v in sq.items()}


def _unit_columns(model: nn.Module, unit: str, layer: int) -> tuple[nn.Linear, torch.Tensor]:
    """The consuming matrix of a block's units and a (units, in_features) 0/1 membership matrix."""
    b = model.blocks[layer]
    if unit == "neuron":
        lin = b.mlp.c_proj
        return lin, torch.eye(lin.in_features, device=lin.weight.device)
    lin, D = b.attn.c_proj, _head_dim(b.attn)
    member = torch.zeros(b.attn.n_head, lin.in_features, device=lin.weight.device)
    for h in range(b.attn.n_head):
        member[h, h * D : (h + 1) * D] = 1.0
    return lin, member


@torch.no_grad()
def _ablation_scores(
    model: nn.Module, unit: str, x: torch.Tensor, y: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Loss increase when each unit is zeroed: (blocks, units); batched over units, no token loops."""
    with eval_mode(model):
        base = float(F.cross_entropy(model(x)[0].flatten(0, 1).float(), y.flatten()))
        L, U = n_units(model, unit)
        out = torch.zeros(L, U)
        B = x.shape[0]
        for layer in range(L):
            lin, member = _unit_columns(model, unit, layer)
            for start in range(0, U, chunk):
                m = member[start : start + chunk]  # (m, in)
                keep = (1.0 - m).repeat_interleave(B, dim=0)[:, None, :]  # (m*B, 1, in)

                def hook(mod, args, keep=keep):
                    return (args[0] * keep.to(args[0].dtype),)

                def fan_out(mod, args, r=m.shape[0]):  # blocks before `layer` run once, not per unit
                    return (args[0].repeat(r, 1, 1),)

                hs = [
                    model.blocks[layer].register_forward_pre_hook(fan_out),
                    lin.register_forward_pre_hook(hook),
                ]
                try:
                    logits, _ = model(x)
                finally:
                    for h in hs:
                        h.remove()
                ce = F.cross_entropy(
                    logits.flatten(0, 1).float(), y.repeat(m.shape[0], 1).flatten(), reduction="none"
                )
                out[layer, start : start + m.shape[0]] = ce.view(m.shape[0], -1).mean(1).cpu() - base
    return out


def unit_scores(
    model: nn.Module,
    unit: str,
    score: str,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    seed: int = 0,
    chunk: int = 32,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Importance scores on the calibration batch ``x`` (targets ``y`` for ``ablation``).

    ``neuron`` / ``head``: a (blocks, units) tensor. ``weight``: ``{matrix name: scores like its weight}``.
    """
    _check(unit, score)
    if score == "ablation" and y is None:
        raise GeoformerError("ablation scores need calibration targets y")
    mats = block_matrices(model)
    gen = torch.Generator().manual_seed(seed)
    if unit == "weight":
        if score == "random":
            return {k: torch.rand(m.weight.shape, generator=gen) for k, m in mats.items()}
        if score == "magnitude":
            return {k: m.weight.detach().abs().cpu() for k, m in mats.items()}
        if score == "wanda":
            norms = input_norms(model, x)
            return {k: (m.weight.detach().abs() * norms[k][None, :]).cpu() for k, m in mats.items()}
        with eval_mode(model):
            model.zero_grad(set_to_none=True)
            logits, _ = model(x)
            F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).backward()
            out = {k: (m.weight.detach() * m.weight.grad).abs().cpu() for k, m in mats.items()}
            model.zero_grad(set_to_none=True)
        return out
    L, U = n_units(model, unit)
    if score == "random":
        return torch.rand(L, U, generator=gen)
    if score == "ablation":
        return _ablation_scores(model, unit, x, y, chunk)
    norms = input_norms(model, x) if score == "wanda" else None
    out = torch.zeros(L, U)
    for layer, b in enumerate(model.blocks):
        lin, member = _unit_columns(model, unit, layer)
        name = f"blocks.{layer}." + ("mlp.c_proj" if unit == "neuron" else "attn.c_proj")
        W = lin.weight.detach()
        if score == "wanda":
            col = W.abs().sum(0) * norms[name]  # ||W[:, j]||_1 * ||X_j||_2
            out[layer] = (member @ col).cpu()
            continue
        col_sq = W.square().sum(0)  # the unit's columns in the consuming matrix
        if unit == "neuron":
            own = b.mlp.c_fc.weight.detach().square().sum(1)  # its c_fc row
        else:
            qkv = b.attn.c_attn.weight.detach().square().sum(1).view(3, b.attn.n_head, -1)
            own = qkv.sum((0, 2))  # its q, k, v rows
        out[layer] = ((member @ col_sq) + own).sqrt().cpu()
    return out


def prune(
    scores: torch.Tensor | dict[str, torch.Tensor], sparsity: float
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Boolean keep-masks removing the lowest-scoring ``round(sparsity * n)`` units.

    A (blocks, units) tensor is ranked globally; a dict of weight scores within each matrix.
    Ties are broken by position (stable sort), so equal scores prune deterministically.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise GeoformerError(f"sparsity must be in [0, 1], got {sparsity}")

    def mask(s: torch.Tensor) -> torch.Tensor:
        flat = s.flatten().float()
        k = int(round(sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:k]] = False
        return keep.view(s.shape)

    if isinstance(scores, dict):
        return {k: mask(v) for k, v in scores.items()}
    return mask(scores)


@torch.no_grad()
def apply_masks(model: nn.Module, unit: str, keep: torch.Tensor | dict[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned units of ``model`` in place (see the module docstring); returns ``model``."""
    _check(unit)
    if unit == "weight":
        for name, lin in block_matrices(model).items():
            lin.weight.mul_(keep[name].to(lin.weight.device, lin.weight.dtype))
        return model
    for layer, b in enumerate(model.blocks):
        k = keep[layer].to(b.mlp.c_fc.weight.device)
        if unit == "neuron":
            b.mlp.c_fc.weight[~k] = 0.0
            if b.mlp.c_fc.bias is not None:
                b.mlp.c_fc.bias[~k] = 0.0
            b.mlp.c_proj.weight[:, ~k] = 0.0
        else:
            cols = k.repeat_interleave(_head_dim(b.attn))
            b.attn.c_proj.weight[:, ~cols] = 0.0
    return model


def pruned_copy(model: nn.Module, unit: str, keep) -> nn.Module:
    """A deep copy of ``model`` with ``keep`` applied (the original is untouched)."""
    return apply_masks(copy.deepcopy(model), unit, keep)


def pruning_curve(
    model: nn.Module,
    unit: str,
    score: str,
    sparsities: Sequence[float],
    calib: tuple[torch.Tensor, torch.Tensor],
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    scores: torch.Tensor | dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """Validation loss after pruning ``unit``s by ``score`` at each sparsity (scores computed once,
    or passed in as ``scores``)."""
    s = unit_scores(model, unit, score, calib[0], calib[1], seed=seed) if scores is None else scores
    return [eval_loss(pruned_copy(model, unit, prune(s, sp)), val_batches) for sp in sparsities]


__all__ = [
    "UNITS",
    "SCORES",
    "MATRICES",
    "block_matrices",
    "n_units",
    "eval_loss",
    "input_norms",
    "unit_scores",
    "prune",
    "apply_masks",
    "pruned_copy",
    "pruning_curve",
]

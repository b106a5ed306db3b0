"""Subspace protection (Gradient Projection Memory, Saha, Garg & Roy, ICLR 2021) for a GPT.

After capability A is learned, every protected linear layer ``y = x W^T`` gets the span of A's inputs
``x`` to that layer: the top left singular vectors ``U`` (``in x k``) of the activation matrix, with ``k``
the smallest number whose singular values hold ``threshold`` of the squared energy (GPM's criterion).
An update ``dW`` with ``dW U = 0`` leaves the layer's output on A's inputs unchanged, so while learning B
each update is projected, ``dW <- dW (I - U U^T)``, on the rows that are protected.

* :func:`energy_basis` is the pure math (SVD + energy threshold);
* :func:`layer_inputs` collects the inputs of named ``nn.Linear`` layers with forward pre-hooks;
* :func:`gpt_protection` builds the protection of a :class:`~geoformer.models.gpt.GPT`: every block's
  linear layers (``layers="all"``) or only the blocks and heads of A's circuits (``layers="circuit"``, the
  heads whose mean-ablation drops an A suite by ``head_threshold``: their q/k/v rows of ``c_attn``, the
  block's ``c_proj`` and MLP); the tied embedding is protected like GPM's first layer (rows of the tokens
  and positions A uses are frozen, its output role projected like ``lm_head``); norm gains frozen or free;
* :class:`SubspaceProjector` applies it to *any* optimizer through step hooks, like
  :class:`~geoformer.circuits.protection.UpdateScaler`: the applied update, not the gradient, is projected
  (Adam's moments still see the full gradient), which makes the guarantee exact for every optimizer.

GPM itself projects SGD gradients; projecting the update is the same for SGD and the only form that keeps
``dW U = 0`` under Adam. Written here because no maintained package implements GPM for ``torch.optim``
optimizers (the authors' code is a research script around SGD).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from geoformer.errors import GeoformerError


def energy_basis(acts: torch.Tensor, threshold: float) -> torch.Tensor:
    """Orthonormal basis (``d x k``) of the span holding ``threshold`` of the energy of the rows of ``acts``.

    ``acts`` is ``(n, d)``; ``k`` is the smallest count of singular values with
    ``sum_{i<=k} s_i^2 >= threshold * sum_i s_i^2`` (0 < threshold <= 1; 1 keeps the whole row space).
    """
    if not 0.0 < threshold <= 1.0:
        raise GeoformerError(f"energy threshold must be in (0, 1], got {threshold}")
    if acts.ndim != 2:
        raise ValueError(f"acts must be (n, d), got shape {tuple(acts.shape)}")
    _, s, vh = torch.linalg.svd(acts, full_matrices=False)
    energy = s.square()
    total = energy.sum()
    if total <= 0:
        return acts.new_zeros(acts.shape[1], 0)
    frac = energy.cumsum(0) / total
    k = int((frac < threshold * (1 - 1e-12)).sum()) + 1
    k = min(k, int((s > s[0] * torch.finfo(s.dtype).eps * max(acts.shape)).sum()))  # never the null space
    return vh[:k].T.contiguous()


def project_out(delta: torch.Tensor, basis: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``delta (I - U U^T)`` on ``rows`` (all rows when None); ``basis`` None freezes those rows."""
    if basis is None:
        out = delta.clone()
        out[rows if rows is not None else slice(None)] = 0
        return out
    proj = delta - (delta @ basis) @ basis.T
    if rows is None:
        return proj
    return torch.where(rows.view(-1, *([1] * (delta.ndim - 1))), proj, delta)


@contextmanager
def layer_inputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Inside the context, ``out[name]`` collects the (flattened to rows) inputs of each named module."""
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise KeyError(f"no such modules: {missing[:3]}")
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [
        mods[n].register_forward_pre_hook(
            lambda _m, args, n=n: out[n].append(args[0].detach().flatten(0, -2))
        )
        for n in names
    ]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@dataclass
class Protected:
    """One projection: ``param`` (a parameter name), ``basis`` (``in x k``, or None: freeze) on ``rows``."""

    param: str
    basis: torch.Tensor | None
    rows: torch.Tensor | None = None  # bool (out,), None = every row
    source: str = ""  # the layer whose inputs gave the basis

    @property
    def dim(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[1])


def circuit_heads(head_drops: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """Heads (layer, head) whose ablation drops some A suite by at least ``threshold``; ``head_drops`` is
    (L, H, n_suites). The single most important head when none reaches it (a circuit is never empty)."""
    worst = head_drops.amax(-1)
    sel = (worst >= threshold).nonzero().tolist()
    if not sel:
        flat = int(worst.flatten().argmax())
        sel = [[flat // worst.shape[1], flat % worst.shape[1]]]
    return [(int(a), int(b)) for a, b in sel]


def gpt_protection(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    threshold: float = 0.97,
    layers: str = "all",
    heads: list[tuple[int, int]] | None = None,
    norms: str = "frozen",
    pad: int | None = 0,
) -> list[Protected]:
    """GPM protection of a GPT for the inputs ``inputs`` (token ids, ``(n, T)``) of capability A.

    ``layers="circuit"`` needs ``heads`` (see :func:`circuit_heads`). Positions holding ``pad`` are left
    out of the activation matrices (they carry no capability).
    """
    if layers not in ("all", "circuit"):
        raise GeoformerError(f"protected layers must be 'all' or 'circuit', got {layers!r}")
    if norms not in ("frozen", "free"):
        raise GeoformerError(f"norms must be 'frozen' or 'free', got {norms!r}")
    if layers == "circuit" and not heads:
        raise GeoformerError("layers='circuit' needs the circuit's heads")
    blocks = model.blocks
    n_layer, n_head = len(blocks), blocks[0].attn.n_head
    width = blocks[0].attn.width
    hd = width // n_head
    chosen: dict[int, list[int]] = {}
    for layer, h in heads or []:
        chosen.setdefault(layer, []).append(h)
    linears: dict[str, torch.Tensor | None] = {}  # module name -> protected rows (None = all)
    for i in range(n_layer):
        if layers == "circuit" and i not in chosen:
            continue
        rows = None
        if layers == "circuit":
            rows = torch.zeros(3 * width, dtype=torch.bool)
            for h in chosen[i]:
                for part in range(3):  # q, k, v
                    rows[part * width + h * hd : part * width + (h + 1) * hd] = True
        linears[f"blocks.{i}.attn.c_attn"] = rows
        for n in (f"blocks.{i}.attn.c_proj", f"blocks.{i}.mlp.c_fc", f"blocks.{i}.mlp.c_proj"):
            linears[n] = None
    keep = (inputs != pad).flatten() if pad is not None else torch.ones(inputs.numel(), dtype=torch.bool)
    was = model.training
    model.eval()
    with torch.no_grad(), layer_inputs(model, [*linears, "lm_head"]) as acts:
        model(inputs)
    model.train(was)
    out: list[Protected] = []
    for name, rows in linears.items():
        a = torch.cat(acts[name])[keep]
        out.append(Protected(f"{name}.weight", energy_basis(a, threshold), rows, name))
    # the tied embedding: frozen rows of the tokens and positions A uses (GPM on a one-hot input), and its
    # output role (lm_head) projected out of the span of A's final hidden states
    used = torch.zeros(model.wte.num_embeddings, dtype=torch.bool)
    used[inputs[inputs != pad].unique() if pad is not None else inputs.unique()] = True
    out.append(Protected("wte.weight", None, used, "wte (tokens of A)"))
    out.append(
        Protected("wte.weight", energy_basis(torch.cat(acts["lm_head"])[keep], threshold), None, "lm_head")
    )
    if getattr(model, "wpe", None) is not None:
        pos = torch.zeros(model.wpe.num_embeddings, dtype=torch.bool)
        pos[: inputs.shape[1]] = True
        out.append(Protected("wpe.weight", None, pos, "wpe (positions of A)"))
    if norms == "frozen":
        for name, p in model.named_parameters():
            if p.ndim == 1 and (".ln_" in name or name.startswith("ln_f")):
                out.append(Protected(name, None, None, "norm gain"))
    return out


def summary(prot: list[Protected]) -> dict[str, object]:
    """Basis dimensions per layer and the fraction of each protected weight's input space they take."""
    dims = {p.source: p.dim for p in prot if p.basis is not None}
    frac = {p.source: p.dim / p.basis.shape[0] for p in prot if p.basis is not None}
    return {"dims": dims, "mean_fraction": sum(frac.values()) / max(1, len(frac)),
            "frozen": [p.source for p in prot if p.basis is None]}  # fmt: skip


class SubspaceProjector:
    """Project every optimizer update of ``model`` with ``protection`` (hooks on ``optimizer.step``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, protection: list[Protected]):
        self.params = dict(model.named_parameters())
        unknown = {p.param for p in protection} - set(self.params)
        if unknown:
            raise KeyError(f"no such parameters: {sorted(unknown)[:3]}")
        self.protection = [
            Protected(p.param, None if p.basis is None else p.basis.to(self.params[p.param]),
                      None if p.rows is None else p.rows.to(self.params[p.param].device), p.source)
            for p in protection
        ]  # fmt: skip
        self._names = sorted({p.param for p in self.protection})
        self._old: dict[str, torch.Tensor] = {}
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def _pre(self, *_):
        self._old = {k: self.params[k].detach().clone() for k in self._names}

    @torch.no_grad()
    def _post(self, *_):
        if not self._old:
            return
        delta = {k: self.params[k] - self._old[k] for k in self._names}
        for p in self.protection:
            delta[p.param] = project_out(delta[p.param], p.basis, p.rows)
        for k in self._names:
            self.params[k].copy_(self._old[k] + delta[k])
        self._old = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

"""Which heads, neurons and parameters a capability needs: ablation, patching, attribution.

Hook points. We follow TransformerLens's idea of *named activation sites* (``hook_z``: the per-head
attention output before the output projection; ``hook_post``: the MLP neurons) but need none of its
machinery, nor nnsight's tracing: every attention kind in this repo ends in ``c_proj`` applied to the
concatenated head outputs, so a forward *pre*-hook on ``blocks[l].attn.c_proj`` sees ``z`` as
(B, T, n_head * head_dim) with head ``h`` in channels ``h*D:(h+1)*D``, and a forward hook on
``blocks[l].mlp.gelu`` sees the neurons (B, T, 4C). Both are plain ``torch.nn`` hooks, so no model
code changes and the hooks come off cleanly (context managers). Because ``c_proj`` is linear,
editing head ``h``'s slice of ``z`` changes the block output only through ``W_O[:, h]`` (tested).

Batching. Single-component ablations and patches run as one forward per layer (or per chunk of
neurons) over the batch repeated V times, variant v editing component v: no Python loop over
examples, tokens or heads.

Measures, all per capability (suite):

* ``ablate_heads`` / ``ablate_neurons``: exact-match accuracy and mean answer log-prob with each
  component set to zero or to its mean over the suite (per position);
* ``patch_heads``: activation patching, clean head output into the corrupted run; restoration
  ``(lp_patched - lp_corrupt) / (lp_clean - lp_corrupt)`` of the clean answer's log-prob;
* ``grad_x_act``: attribution patching (Nanda 2023), the first-order estimate
  ``delta_metric ~ sum (a_new - a) * d metric / d a`` of all the above from one backward pass;
* ``param_importance``: per element ``|theta * d metric / d theta|`` (the first-order effect of zeroing
  that element) or the squared gradient (``fisher``);
* ``head_loss_increase``: for plain text (no suite), each head's ablation cost in next-token loss;
* ``bridge_scores``: for each component, how many capabilities drop by more than a threshold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from geoformer.circuits.canaries import Suite, answer_logprob, exact_match

Edit = Callable[[torch.Tensor], torch.Tensor]


def _blocks(model: nn.Module) -> nn.ModuleList:
    return model.blocks  # type: ignore[return-value]


def head_site(model: nn.Module, layer: int) -> nn.Module:
    """The module whose *input* is layer ``layer``'s concatenated per-head outputs (``hook_z``)."""
    return _blocks(model)[layer].attn.c_proj


def neuron_site(model: nn.Module, layer: int) -> nn.Module:
    """The module whose *output* is layer ``layer``'s MLP neurons (``hook_post``)."""
    return _blocks(model)[layer].mlp.gelu


def n_heads(model: nn.Module) -> tuple[int, int, int]:
    """(n_layer, n_head, head_dim)."""
    cfg = model.config  # type: ignore[attr-defined]
    return cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head


@contextlib.contextmanager
def edit_site(model: nn.Module, site: str, layer: int, edit: Edit) -> Iterator[None]:
    """Replace the activation at ``site`` ("z" or "neurons") of ``layer`` by ``edit(activation)``.

    For "z" the activation passed to ``edit`` is (B, T, n_head, head_dim); for "neurons" (B, T, 4C).
    """
    if site == "z":
        _, H, D = n_heads(model)

        def pre(_m, args):
            z = args[0]
            return (edit(z.view(*z.shape[:-1], H, D)).reshape(z.shape),)

        h = head_site(model, layer).register_forward_pre_hook(pre)
    elif site == "neurons":
        h = neuron_site(model, layer).register_forward_hook(lambda _m, _a, out: edit(out))
    else:
        raise ValueError(f"unknown site {site!r}")
    try:
        yield
    finally:
        h.remove()


@contextlib.contextmanager
def capture(model: nn.Module, site: str, *, grad: bool = False) -> Iterator[list[torch.Tensor]]:
    """Record the activation at ``site`` of every layer (list indexed by layer); ``grad`` keeps its .grad."""
    L, _, _ = n_heads(model)
    acts: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    with contextlib.ExitStack() as stack:
        for layer in range(L):

            def keep(a, layer=layer):
                if grad:
                    a.retain_grad()
                acts[layer] = a
                return a

            stack.enter_context(edit_site(model, site, layer, keep))
        yield acts


@contextlib.contextmanager
def ablated(
    model: nn.Module,
    heads: list[tuple[int, int]] = (),  # type: ignore[assignment]
    neurons: list[tuple[int, int]] = (),  # type: ignore[assignment]
    means: dict[str, list[torch.Tensor]] | None = None,
) -> Iterator[None]:
    """Ablate several components at once: zero, or their per-position means when ``means`` is given."""
    L, _, _ = n_heads(model)
    with contextlib.ExitStack() as stack:
        for site, comps in (("z", heads), ("neurons", neurons)):
            for layer in range(L):
                idx = [c for (lay, c) in comps if lay == layer]
                if not idx:
                    continue

                def edit(a, idx=idx, layer=layer, site=site):
                    keep = torch.ones(a.shape[2], dtype=a.dtype, device=a.device)
                    keep[idx] = 0
                    keep = keep.view(-1, *([1] * (a.dim() - 3)))
                    repl = 0.0 if means is None else means[site][layer][: a.size(1)]
                    return a * keep + (1 - keep) * repl

                stack.enter_context(edit_site(model, site, layer, edit))
        yield


def _metrics(logits: torch.Tensor, targets: torch.Tensor, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variant accuracy and mean answer log-prob from logits of a V-times repeated batch."""
    acc = exact_match(logits, targets.repeat(v, 1)).float().view(v, -1).mean(1)
    lp = answer_logprob(logits, targets.repeat(v, 1)).view(v, -1).mean(1)
    return acc, lp


@torch.no_grad()
def site_means(model: nn.Module, suite: Suite) -> dict[str, list[torch.Tensor]]:
    """Per-position means over the suite of z (T, H, D) and neurons (T, 4C), for every layer."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    for site in ("z", "neurons"):
        with capture(model, site) as acts:
            model(suite.inputs)
        out[site] = [a.mean(0) for a in acts]
    return out


def _dtype(model: nn.Module) -> torch.dtype:
    """The model's floating dtype: per-component metrics are stored in it, so float64 models stay exact."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


@contextlib.contextmanager
def each_head_ablated(model: nn.Module, layer: int, mean: torch.Tensor | None = None) -> Iterator[None]:
    """For a batch repeated n_head times: variant h has head h of ``layer`` set to zero (``mean`` None) or to its
    per-position mean ``mean`` (T, H, D). One forward then measures every single-head ablation of the layer."""
    _, H, _ = n_heads(model)

    def edit(z):
        onehot = torch.eye(H, dtype=z.dtype, device=z.device).view(H, 1, 1, H, 1)  # variant v edits head v
        zv = z.view(H, -1, *z.shape[1:])
        repl = 0.0 if mean is None else mean
        return (zv * (1 - onehot) + onehot * repl).view_as(z)

    with edit_site(model, "z", layer, edit):
        yield


@torch.no_grad()
def ablate_heads(
    model: nn.Module, suite: Suite, mode: str = "zero", means: dict | None = None
) -> dict[str, torch.Tensor]:
    """Ablate each head alone. Returns ``acc``, ``logprob`` (L, H) and ``clean_acc``, ``clean_logprob``."""
    model.eval()
    L, H, _ = n_heads(model)
    if mode == "mean" and means is None:
        means = site_means(model, suite)
    logits, _ = model(suite.inputs)
    acc0, lp0 = _metrics(logits, suite.targets, 1)
    dt = _dtype(model)
    acc, lp = torch.zeros(L, H, dtype=dt), torch.zeros(L, H, dtype=dt)
    x = suite.inputs.repeat(H, 1)
    for layer in range(L):
        with each_head_ablated(model, layer, None if mode == "zero" else means["z"][layer]):  # type: ignore[index]
            logits, _ = model(x)
        acc[layer], lp[layer] = _metrics(logits, suite.targets, H)
    return {"acc": acc, "logprob": lp, "clean_acc": acc0[0], "clean_logprob": lp0[0]}


@torch.no_grad()
def head_loss_increase(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """(L, H): the rise of the mean next-token cross-entropy on windows ``x`` -> ``y`` when each head alone is
    ablated (``mode``: its output ``z`` set to zero, or to its per-position mean over ``x``).

    The capability measure for plain text, which has no exact-match suite: a head whose ablation costs A
    ``delta`` nats per token carries that much of A. One forward per layer over the windows repeated H times,
    variant h editing head h, as :func:`ablate_heads`.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be zero or mean, got {mode!r}")
    was = model.training
    model.eval()
    L, H, _ = n_heads(model)
    means: list[torch.Tensor] = []
    if mode == "mean":
        with capture(model, "z") as acts:
            model(x)
        means = [a.mean(0) for a in acts]

    def loss(logits: torch.Tensor, v: int) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(v, 1).flatten(), reduction="none")
        return ce.view(v, -1).mean(1)

    clean = loss(model(x)[0], 1)[0]
    dt = _dtype(model)
    out = torch.zeros(L, H, dtype=dt)
    xr = x.repeat(H, 1)
    for layer in range(L):
        with each_head_ablated(model, layer, means[layer] if mode == "mean" else None):
            out[layer] = (loss(model(xr)[0], H) - clean).to(dt).cpu()
    model.train(was)
    return out


@torch.no_grad()
def ablate_neurons(
    model: nn.Module, suite: Suite, mode: str = "zero", means: dict | None = None, chunk: int = 32
) -> dict[str, torch.Tensor]:
    """Ablate each MLP neuron alone; ``acc``, ``logprob`` are (L, 4C), plus the clean values.

    Batched ``chunk`` neurons at a time.
    """
    model.eval()
    L, _, _ = n_heads(model)
    if mode == "mean" and means is None:
        means = site_means(model, suite)
    U = _blocks(model)[0].mlp.c_fc.out_features
    dt = _dtype(model)
    acc, lp = torch.zeros(L, U, dtype=dt), torch.zeros(L, U, dtype=dt)
    acc0, lp0 = _metrics(model(suite.inputs)[0], suite.targets, 1)
    for layer in range(L):
        for start in range(0, U, chunk):
            idx = torch.arange(start, min(start + chunk, U))
            V = len(idx)
            onehot = torch.zeros(V, U, dtype=dt)
            onehot[torch.arange(V), idx] = 1
            onehot = onehot.view(V, 1, 1, U)

            def edit(a, onehot=onehot, V=V, layer=layer):
                av = a.view(V, -1, *a.shape[1:])
                repl = 0.0 if mode == "zero" else means["neurons"][layer]  # type: ignore[index]
                return (av * (1 - onehot) + onehot * repl).view_as(a)

            with edit_site(model, "neurons", layer, edit):
                logits, _ = model(suite.inputs.repeat(V, 1))
            acc[layer, idx], lp[layer, idx] = _metrics(logits, suite.targets, V)
    return {"acc": acc, "logprob": lp, "clean_acc": acc0[0], "clean_logprob": lp0[0]}


@torch.no_grad()
def patch_heads(model: nn.Module, suite: Suite) -> dict[str, torch.Tensor]:
    """Activation patching: each head's clean output into the corrupted run (one forward per layer).

    ``restoration`` (L, H) = (lp_patched - lp_corrupt) / (lp_clean - lp_corrupt), where lp is the mean
    log-prob of the *clean* answer; 1 means the head alone carries the clean answer's information.
    """
    model.eval()
    L, H, _ = n_heads(model)
    with capture(model, "z") as clean_z:
        logits, _ = model(suite.inputs)
    lp_clean = answer_logprob(logits, suite.targets).mean()
    # the clean answer's tokens, placed at the corrupted rows' answer positions (same positions)
    logits_c, _ = model(suite.corrupt_inputs)
    lp_corrupt = answer_logprob(logits_c, suite.targets).mean()
    onehot = torch.eye(H).view(H, 1, 1, H, 1)
    x = suite.corrupt_inputs.repeat(H, 1)
    lp = torch.zeros(L, H, dtype=lp_clean.dtype)
    for layer in range(L):
        cz = clean_z[layer]

        def edit(z, cz=cz):
            zv = z.view(H, -1, *z.shape[1:])
            return (zv * (1 - onehot) + onehot * cz).view_as(z)

        with edit_site(model, "z", layer, edit):
            logits, _ = model(x)
        lp[layer] = answer_logprob(logits, suite.targets.repeat(H, 1)).view(H, -1).mean(1)
    denom = lp_clean - lp_corrupt
    return {"restoration": (lp - lp_corrupt) / denom, "lp_clean": lp_clean, "lp_corrupt": lp_corrupt}


def grad_x_act(model: nn.Module, suite: Suite, means: dict | None = None) -> dict[str, torch.Tensor]:
    """Attribution patching: first-order estimates from one forward/backward per input set.

    Metric m = mean answer log-prob. Returns estimated delta m for
    ``head_zero`` / ``head_mean`` (L, H), ``neuron_zero`` / ``neuron_mean`` (L, 4C) (ablations:
    sum over positions of (a_new - a) * dm/da), and ``head_patch`` (L, H): (z_clean - z_corrupt) * dm/dz
    at the corrupted run with m the clean answer's log-prob (the estimate of ``patch_heads``' numerator).
    """
    model.eval()
    L, H, D = n_heads(model)
    if means is None:
        means = site_means(model, suite)
    out: dict[str, torch.Tensor] = {}
    with capture(model, "z", grad=True) as z, capture(model, "neurons", grad=True) as nrn:
        logits, _ = model(suite.inputs)
        answer_logprob(logits, suite.targets).mean().backward()
    for site, acts, key in (("z", z, "head"), ("neurons", nrn, "neuron")):
        zero = torch.stack([(-a * a.grad).sum(dim=(0, 1)) for a in acts])
        mean = torch.stack([((means[site][i] - a) * a.grad).sum(dim=(0, 1)) for i, a in enumerate(acts)])
        if site == "z":
            zero, mean = zero.sum(-1), mean.sum(-1)
        out[f"{key}_zero"], out[f"{key}_mean"] = zero.detach(), mean.detach()
    with torch.no_grad(), capture(model, "z") as cz:
        model(suite.inputs)
    with capture(model, "z", grad=True) as z:
        logits, _ = model(suite.corrupt_inputs)
        answer_logprob(logits, suite.targets).mean().backward()
    out["head_patch"] = torch.stack(
        [((cz[i] - a) * a.grad).sum(dim=(0, 1)).sum(-1) for i, a in enumerate(z)]
    ).detach()
    model.zero_grad(set_to_none=True)
    return out


def param_importance(model: nn.Module, suite: Suite, kind: str = "taylor") -> dict[str, torch.Tensor]:
    """Per-element importance of every parameter for ``suite`` (same shapes as the parameters).

    ``taylor``: |theta * dm/dtheta| (first-order effect of zeroing the element on m = mean answer
    log-prob); ``fisher``: (dm/dtheta)^2 of the batch mean (cheap; see ``ewc.fisher_diag`` for the
    per-example empirical Fisher).
    """
    if kind not in ("taylor", "fisher"):
        raise ValueError(f"kind must be 'taylor' or 'fisher', got {kind!r}")
    model.eval()
    model.zero_grad(set_to_none=True)
    logits, _ = model(suite.inputs)
    answer_logprob(logits, suite.targets).mean().backward()
    out = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[name] = (p.detach() * g).abs() if kind == "taylor" else g.pow(2)
    model.zero_grad(set_to_none=True)
    return out


def head_param_norms(model: nn.Module) -> torch.Tensor:
    """(L, H) Frobenius norm of each head's own weights: its q, k, v rows of c_attn and its c_proj columns."""
    L, H, D = n_heads(model)
    out = torch.zeros(L, H)
    for layer, blk in enumerate(_blocks(model)):
        W = blk.attn.c_attn.weight.detach()  # (3C, C)
        O = blk.attn.c_proj.weight.detach()  # (C, C)
        C = O.size(0)
        for h in range(H):
            rows = torch.cat([torch.arange(h * D, (h + 1) * D) + j * C for j in range(3)])
            out[layer, h] = (W[rows].pow(2).sum() + O[:, h * D : (h + 1) * D].pow(2).sum()).sqrt()
    return out


def bridge_scores(drops: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Number of capabilities whose drop exceeds ``threshold``; ``drops`` is (..., n_capabilities)."""
    return (drops > threshold).sum(-1)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.flatten().double()
        order = v.argsort()
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=torch.double)
        for u in v.unique():  # average ranks of ties
            m = v == u
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    d = (rx.pow(2).sum() * ry.pow(2).sum()).sqrt()
    return float((rx * ry).sum() / d) if d > 0 else float("nan")

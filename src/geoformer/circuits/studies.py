"""Studies on trained models that the ledger's 002 rows run: pruning curves, the quantisation split, and the
smallest weight set whose removal breaks a capability."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
EVAL_BATCHES, CALIB_BATCH = 20, 32
QUANT_CASES = [(g, b) for b in (8, 4, 3, 2) for g in ("attn", "ffn", "ffn_fc", "ffn_proj", "attn+ffn")]


def load_runs(folder: Path, variant: str, seeds: Sequence[int]) -> Iterator[tuple[Any, Any, int]]:
    """(model, cfg, seed) for every seed of ``variant`` from a comparison's run folders."""
    from geoformer.train.trainer import load_model

    for s in seeds:
        model, cfg, _ = load_model(Path(folder) / "runs" / variant / f"seed{s}")
        yield model, cfg, s


def batches(cfg, seed: int):
    """Fixed validation batches and one calibration batch from the training split."""
    from geoformer import data as gdata

    d = gdata.prepare_data(cfg.data)
    T = cfg.model.block_size
    val = gdata.fixed_batches(d.val, EVAL_BATCHES, 16, T, seed=10_000 + seed)
    calib = gdata.fixed_batches(d.train, 1, CALIB_BATCH, T, seed=20_000 + seed)[0]
    return val, calib


def precision_study(folder: Path, seeds: Sequence[int], variant: str = "gpt") -> dict[str, Any]:
    """Val-loss increase per (group, bits) for every seed's trained model, plus group sizes."""
    from geoformer.circuits import pruning as P
    from geoformer.circuits import quantize as Q

    per_seed, sizes = [], {}
    for model, cfg, seed in load_runs(folder, variant, seeds):
        val, _ = batches(cfg, seed)
        base = P.eval_loss(model, val)
        row = {"seed": seed, "base": base}
        for group, bits in QUANT_CASES:
            targets = group.split("+")
            sizes[group] = Q.group_size(model, targets)
            row[f"{group}@int{bits}"] = P.eval_loss(Q.quantize_model(model, targets, bits), val) - base
        per_seed.append(row)
    return {"per_seed": per_seed, "group_sizes": sizes}


def pruning_study(folder: Path, seeds: Sequence[int], variant: str = "gpt", sparsities=None) -> dict[str, Any]:
    """Val loss vs sparsity for every (unit, score) on every seed's trained model."""
    from geoformer.circuits import pruning as P
    from geoformer.experiments.stats import pearson

    sparsities = SPARSITIES if sparsities is None else sparsities
    curves: dict[str, dict[str, list[list[float]]]] = {}
    bases, reliability = [], []
    for model, cfg, seed in load_runs(folder, variant, seeds):
        val, calib = batches(cfg, seed)
        bases.append(P.eval_loss(model, val))
        kept = {}
        for unit in P.UNITS:
            for score in P.SCORES:
                kept[unit, score] = s = P.unit_scores(model, unit, score, *calib, seed=seed)
                c = P.pruning_curve(model, unit, score, sparsities, calib, val, scores=s)
                curves.setdefault(unit, {}).setdefault(score, []).append(c)
        _, calib2 = batches(cfg, seed + 500)  # split-half reliability of neuron ablation scores
        a = kept["neuron", "ablation"].flatten().tolist()
        b = P.unit_scores(model, "neuron", "ablation", *calib2).flatten().tolist()
        mag = kept["neuron", "magnitude"].flatten().tolist()
        reliability.append({"seed": seed, "ablation_r": pearson(a, b), "ablation_vs_magnitude_r": pearson(a, mag)})
    return {"sparsities": list(sparsities), "base": bases, "curves": curves, "neuron_ablation": reliability}


def plot_pruning(study: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sp = np.asarray(study["sparsities"]) * 100
    units = list(study["curves"])
    fig, axes = plt.subplots(1, len(units), figsize=(4.2 * len(units), 3.6), sharey=False)
    base = float(np.mean(study["base"]))
    for ax, unit in zip(np.atleast_1d(axes), units, strict=True):
        for score, runs in study["curves"][unit].items():
            arr = np.asarray(runs)
            m, s = arr.mean(0), arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
            ax.plot(sp, m, marker="o", ms=3, label=score)
            ax.fill_between(sp, m - s, m + s, alpha=0.2)
        ax.axhline(base, color="k", lw=0.8, ls="--", label="unpruned")
        ax.set_title(f"{unit}s")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"Pruning a trained char-level GPT (mean ± std over {len(study['base'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def _zero_top(model, order: torch.Tensor, flat_sizes: list[int], names: list[str], k: int):
    """A copy of ``model`` with the ``k`` globally top-ranked parameter elements set to zero."""
    import copy

    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    offsets = torch.tensor([0, *flat_sizes]).cumsum(0)
    for idx in order[:k].tolist():
        j = int(torch.searchsorted(offsets, idx, right=True)) - 1
        params[names[j]].view(-1)[idx - int(offsets[j])] = 0.0
    return m


def minimal_breaking_set(model, suite, *, broken: float = 0.5, max_frac: float = 0.2) -> dict[str, Any]:
    """The fewest parameter elements, taken in order of Taylor importance |theta * d m / d theta| (m = mean answer
    log-prob on ``suite``), whose zeroing leaves at most ``broken`` x the clean accuracy: a greedy upper bound on
    the size of the capability's circuit. Bisection over k (accuracy is taken as monotone in k)."""
    from geoformer.circuits import attribution as attr
    from geoformer.circuits.canaries import score

    clean = score(model, suite)
    imp = attr.param_importance(model, suite, "taylor")
    names = list(imp)
    flat = torch.cat([imp[n].flatten() for n in names])
    order = flat.argsort(descending=True)
    sizes = [imp[n].numel() for n in names]
    total = int(flat.numel())
    target = broken * clean

    def acc(k: int) -> float:
        return score(_zero_top(model, order, sizes, names, k), suite)

    lo, hi = 0, 1
    while hi < max_frac * total and acc(hi) > target:
        lo, hi = hi, hi * 2
    if hi >= max_frac * total and acc(min(hi, total)) > target:
        return {"k": None, "total": total, "clean": clean, "fraction": None}
    while hi - lo > 1:  # acc(lo) > target >= acc(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if acc(mid) > target else (lo, mid)
    return {"k": hi, "total": total, "clean": clean, "fraction": hi / total, "acc_at_k": acc(hi)}

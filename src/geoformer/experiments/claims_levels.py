"""Claims of seed 002 on level structure, exactness, pruning and mixed precision.

The level rows share one comparison (``geoformer compare --preset levels``: gpt / mixed /
levels_free / levels / levels_exact, 3 seeds); the pruning and precision rows share the trained models of
``geoformer compare --preset pruning`` (the same GPT trained longer, 3 seeds), so the ledger trains
nothing twice. Each row writes its own JSON (and the pruning row a PNG) under
``<ledger>/experiments/<id>/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from geoformer.experiments.claims import ClaimContext, Verdict, ci_verdict, claim
from geoformer.experiments.stats import mean_std, paired_diff_ci

PRESET = "levels"
PRUNE_PRESET = "pruning"  # the same gpt as the levels baseline, trained 2000 iters
QUICK_SETS = [("train.max_iters", 150), ("train.eval_interval", 50)]
SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
EVAL_BATCHES, CALIB_BATCH = 20, 32
QUANT_CASES = [
    *((g, b) for b in (8, 4, 3, 2) for g in ("attn", "ffn", "ffn_fc", "ffn_proj", "attn+ffn")),
]


def shared_comparison(ctx: ClaimContext, preset: str = PRESET) -> tuple[dict[str, Any], Path]:
    """A preset's comparison (trained once per ledger, reused by every row) and its folder."""
    res = ctx.compare(preset, seeds=3, sets=QUICK_SETS if ctx.quick else (), key=preset)
    return res, ctx.shared(preset + ("-quick" if ctx.quick else ""))


def finals(res: dict[str, Any]) -> dict[str, list[float]]:
    return {n: [r["summary"]["final_val_loss"] for r in v["runs"]] for n, v in res["variants"].items()}


def _fmt(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return f"{m:.3f} ± {s:.3f}"


def _diff(a: list[float], b: list[float]) -> tuple[dict[str, float], str]:
    d = paired_diff_ci(a, b)
    return d, f"{d['mean']:+.4f} [95% CI {d['lo']:+.4f}, {d['hi']:+.4f}], n={d['n']}"


def _load_runs(res: dict[str, Any], folder: Path, variant: str):
    """(model, cfg, seed) for every seed of ``variant``, from the comparison's run folders."""
    from geoformer.train.trainer import load_model

    for r in res["variants"][variant]["runs"]:
        model, cfg, _ = load_model(folder / "runs" / variant / f"seed{r['seed']}")
        yield model, cfg, r["seed"]


def _batches(cfg, seed: int):
    """Fixed validation batches and one calibration batch from the training split."""
    from geoformer import data as gdata

    d = gdata.prepare_data(cfg.data)
    T = cfg.model.block_size
    val = gdata.fixed_batches(d.val, EVAL_BATCHES, 16, T, seed=10_000 + seed)
    calib = gdata.fixed_batches(d.train, 1, CALIB_BATCH, T, seed=20_000 + seed)[0]
    return val, calib


def _save(ctx: ClaimContext, name: str, obj: Any) -> None:
    (ctx.out / name).write_text(json.dumps(obj, indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------------------- level structure
def exactness_of_levels(res: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Exactness measures of the trained transition maps (E, cohomology dims, subspace match)."""
    from geoformer.diagnostics.exactness import exactness_report
    from geoformer.models.levels import exactness_penalty

    out: dict[str, Any] = {}
    for variant in ("levels_free", "levels", "levels_exact"):
        if variant not in res["variants"]:
            continue
        rows = []
        for model, _, seed in _load_runs(res, folder, variant):
            maps = [w.detach() for w in model.transition_maps()]
            rep = exactness_report(maps, rtol=0.05)
            sv = torch.linalg.svdvals(maps[-1].double())
            rep.update(
                seed=seed,
                E=float(exactness_penalty([m.double() for m in maps])),
                # the soft penalty can be met by inflating one direction of d_1: watch its top gain
                d1_top_over_median=float(sv[0] / sv.median()),
            )
            rows.append(rep)
        out[variant] = rows
    return out


@claim(
    id="002-level-structure-helps",
    claim="A level-structured transformer (local H0, sparse H1, global H2 attention joined by transition "
    "maps kept near an exact sequence) learns better than a standard transformer.",
    source="seeds/002_*.txt, 'Cohomological Architecture Search' / 'Sheaf-Theoretic Loss Functions'",
    experiment="`geoformer compare --preset levels` (Shakespeare char, 3 blocks x 96, 800 iters x 16 x 64 "
    "tokens, 3 seeds; full parameter match 346,848 vs 346,656); final validation loss of `levels` "
    "(exactness weight 1) vs `gpt`; ablations `mixed` (attention schedule only) and `levels_free` (no penalty) "
    "in the details; quick: 150 iters",
    rule="95% paired t-interval over seeds of (levels - gpt): entirely < 0 reproduced, entirely > 0 "
    "not reproduced, else inconclusive",
)
def level_structure_helps(ctx: ClaimContext) -> Verdict:
    res, folder = shared_comparison(ctx)
    f = finals(res)
    d, txt = _diff(f["levels"], f["gpt"])
    details: dict[str, Any] = {"final_val_loss": f, "diffs_vs_gpt": {}}
    for v in f:
        if v != "gpt":
            details["diffs_vs_gpt"][v] = paired_diff_ci(f[v], f["gpt"])
    details["exactness"] = exactness_of_levels(res, folder)
    details["params"] = {n: v["runs"][0]["summary"].get("params") for n, v in res["variants"].items()}
    _save(ctx, "levels.json", details)
    E = [r["E"] for r in details["exactness"].get("levels", [])]
    measured = (
        f"val loss gpt {_fmt(f['gpt'])}, mixed {_fmt(f['mixed'])}, levels_free {_fmt(f['levels_free'])}, "
        f"levels {_fmt(f['levels'])}"
        + (f", levels_exact {_fmt(f['levels_exact'])}" if "levels_exact" in f else "")
        + f"; levels - gpt {txt}; trained penalty E = {_fmt(E)}"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="negative"), details=details)


@claim(
    id="002-exactness-penalty-helps",
    claim="Penalising violations of exactness between levels ('sheaf-theoretic loss') improves the model.",
    source="seeds/002_*.txt, 'Sheaf-Theoretic Loss Functions' / 'Structural Regularization'",
    experiment="the `levels` comparison: final validation loss of `levels` (penalty weight 1) vs "
    "`levels_free` (same model, weight 0), 3 seeds",
    rule="95% paired t-interval over seeds of (levels - levels_free): entirely < 0 reproduced, "
    "entirely > 0 not reproduced, else inconclusive",
)
def exactness_penalty_helps(ctx: ClaimContext) -> Verdict:
    res, _ = shared_comparison(ctx)
    f = finals(res)
    d, txt = _diff(f["levels"], f["levels_free"])
    measured = (
        f"val loss levels {_fmt(f['levels'])} vs levels_free {_fmt(f['levels_free'])}; difference {txt}"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="negative"), details=d)


@claim(
    id="002-exact-sequence-helps",
    claim="Transition maps that form an exact sequence between levels (im d_0 = ker d_1) make the "
    "level-structured model better.",
    source="seeds/002_*.txt, 'Cohomological Architecture Search' ('networks where the exact sequences "
    "factor cleanly through the layers')",
    experiment="the `levels` comparison: `levels_exact` (d_0 = Pi W_0 P of rank 48, d_1 = W_1 (I - Pi) P: "
    "exact by construction, same parameter count) vs `levels_free` (unconstrained maps), final "
    "validation loss, 3 seeds",
    rule="95% paired t-interval over seeds of (levels_exact - levels_free): entirely < 0 reproduced, "
    "entirely > 0 not reproduced, else inconclusive",
)
def exact_sequence_helps(ctx: ClaimContext) -> Verdict:
    res, _ = shared_comparison(ctx)
    f = finals(res)
    d, txt = _diff(f["levels_exact"], f["levels_free"])
    g, gtxt = _diff(f["levels_exact"], f["gpt"])
    measured = (
        f"val loss levels_exact {_fmt(f['levels_exact'])} vs levels_free {_fmt(f['levels_free'])}; "
        f"difference {txt} (vs gpt {gtxt})"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="negative"), details=d)


# ---------------------------------------------------------------------------------------- precision split
def precision_study(res: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Val-loss increase per (group, bits) for every seed's trained gpt, plus group sizes."""
    from geoformer.circuits import pruning as P
    from geoformer.circuits import quantize as Q

    per_seed = []
    sizes: dict[str, int] = {}
    for model, cfg, seed in _load_runs(res, folder, "gpt"):
        val, _ = _batches(cfg, seed)
        base = P.eval_loss(model, val)
        row = {"seed": seed, "base": base}
        for group, bits in QUANT_CASES:
            targets = group.split("+")
            sizes[group] = Q.group_size(model, targets)
            row[f"{group}@int{bits}"] = P.eval_loss(Q.quantize_model(model, targets, bits), val) - base
        per_seed.append(row)
    return {"per_seed": per_seed, "group_sizes": sizes}


@claim(
    id="002-attention-needs-precision",
    claim="Models are more robust to aggressive quantisation of feed-forward layers than of attention "
    "layers; attention needs higher precision.",
    source="seeds/002_*.txt, mixed-precision discussion ('attention weights ... define the structure')",
    experiment="`geoformer compare --preset pruning` (the `levels` baseline GPT, 3 x 96, trained 2000 iters "
    "x 16 x 64 tokens, 3 seeds); symmetric per-channel "
    "round-to-nearest fake quantisation of attention (qkv + out proj, 4C^2 weights per block) or FFN "
    "halves (c_fc or c_proj, 4C^2 each) to int4 (int8/3/2 in the details); validation-loss increase on "
    "20 x 16 x 64 tokens",
    rule="95% paired t-interval over seeds of dLoss(attn int4) - dLoss(FFN half int4, mean of c_fc and "
    "c_proj), equal weight counts: entirely > 0 reproduced, entirely < 0 not reproduced, else inconclusive",
)
def attention_needs_precision(ctx: ClaimContext) -> Verdict:
    res, folder = shared_comparison(ctx, PRUNE_PRESET)
    study = precision_study(res, folder)
    _save(ctx, "precision.json", study)
    rows = study["per_seed"]
    col = {k: [r[k] for r in rows] for k in rows[0] if k != "seed"}
    half = [(a + b) / 2 for a, b in zip(col["ffn_fc@int4"], col["ffn_proj@int4"], strict=True)]
    d, txt = _diff(col["attn@int4"], half)
    measured = (
        f"int4 dLoss: attn {_fmt(col['attn@int4'])}, FFN half {_fmt(half)} (c_fc {_fmt(col['ffn_fc@int4'])}, "
        f"c_proj {_fmt(col['ffn_proj@int4'])}), whole FFN {_fmt(col['ffn@int4'])}; attn - FFN half {txt}; "
        f"int8 dLoss attn {_fmt(col['attn@int8'])}, FFN {_fmt(col['ffn@int8'])}; "
        f"int3 (secondary) attn {_fmt(col['attn@int3'])}, c_fc {_fmt(col['ffn_fc@int3'])}, "
        f"c_proj {_fmt(col['ffn_proj@int3'])}"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="positive"), details=study)


# ---------------------------------------------------------------------------------------- pruning
def pruning_study(res: dict[str, Any], folder: Path, sparsities=None) -> dict[str, Any]:
    """Val loss vs sparsity (default :data:`SPARSITIES`) for every (unit, score) on every seed's trained gpt."""
    from geoformer.circuits import pruning as P
    from geoformer.experiments.stats import pearson

    sparsities = SPARSITIES if sparsities is None else sparsities
    curves: dict[str, dict[str, list[list[float]]]] = {}
    bases, reliability = [], []
    for model, cfg, seed in _load_runs(res, folder, "gpt"):
        val, calib = _batches(cfg, seed)
        bases.append(P.eval_loss(model, val))
        kept = {}
        for unit in P.UNITS:
            for score in P.SCORES:
                kept[unit, score] = s = P.unit_scores(model, unit, score, *calib, seed=seed)
                c = P.pruning_curve(model, unit, score, sparsities, calib, val, scores=s)
                curves.setdefault(unit, {}).setdefault(score, []).append(c)
        # split-half reliability of neuron ablation scores: a second, independent calibration batch
        _, calib2 = _batches(cfg, seed + 500)
        a = kept["neuron", "ablation"].flatten().tolist()
        b = P.unit_scores(model, "neuron", "ablation", *calib2).flatten().tolist()
        mag = kept["neuron", "magnitude"].flatten().tolist()
        reliability.append(
            {"seed": seed, "ablation_r": pearson(a, b), "ablation_vs_magnitude_r": pearson(a, mag)}
        )
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


@claim(
    id="002-pruning-ablation-vs-magnitude",
    claim="Weight magnitude is a poor guide to what can be pruned ('small in magnitude but critical'); "
    "pruning by functional importance preserves the model better.",
    source="seeds/002_*.txt, 'Cohomological Pruning'",
    experiment="`geoformer compare --preset pruning` (3 x 96 GPT, 2000 iters, 3 seeds), no fine-tuning: "
    "prune MLP neurons by "
    "ablation importance (exact loss increase when zeroed, 32 x 64 calibration tokens) vs magnitude at "
    "10..90% sparsity; heads, single weights, Wanda and random in the details and plot",
    rule="95% paired t-interval over seeds of the mean validation loss over sparsities 10..90% (ablation - "
    "magnitude), neurons: entirely < 0 reproduced, entirely > 0 not reproduced, else inconclusive",
)
def pruning_ablation_vs_magnitude(ctx: ClaimContext) -> Verdict:
    import numpy as np

    res, folder = shared_comparison(ctx, PRUNE_PRESET)
    study = pruning_study(res, folder)
    _save(ctx, "pruning.json", study)
    plot_pruning(study, ctx.out / "pruning_curves.png")
    auc = {
        u: {s: [float(np.mean(c)) for c in runs] for s, runs in by.items()}
        for u, by in study["curves"].items()
    }
    d, txt = _diff(auc["neuron"]["ablation"], auc["neuron"]["magnitude"])
    parts = [f"{u}: " + ", ".join(f"{s} {_fmt(v)}" for s, v in by.items()) for u, by in auc.items()]
    measured = (
        "mean val loss over 10-90% sparsity; " + "; ".join(parts) + f"; neurons ablation - magnitude {txt}"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="negative"), details=auc)


__all__ = ["pruning_study", "precision_study", "plot_pruning", "exactness_of_levels", "shared_comparison"]

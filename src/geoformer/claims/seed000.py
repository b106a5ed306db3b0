"""Claims of write-up 000 (homotopy-nn: sparse attention + group-aware homotopy, an equivariant ARC learner).

The learner is :mod:`geoformer.models.arc_learner` (D4-equivariant encoder, per-example adapters, attention among
the demonstration pairs, canonical morphism f*, the group-aware homotopy distance d_H); the synthetic task is the
write-up's (3 random 5 x 5 grids, output colour + 1 mod 10); ARC accuracy is measured on the committed 100-task
ARC-AGI-1 evaluation sample (``configs/arc_eval_ids.txt``) with 2 attempts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from geoformer.claims import rules as R
from geoformer.claims.common import decision_note, fmt, synthetic_values
from geoformer.claims.context import ClaimContext
from geoformer.claims.registry import Row, register
from geoformer.train import checkpoint

O = "000"
LEARNER = ("src/geoformer/models/arc_learner.py", "src/geoformer/models/d4_layers.py", "src/geoformer/geometry/d4.py",
           "src/geoformer/data/arc.py")  # fmt: skip


def synthetic_task(*, n_train: int = 3, n_test: int = 20, size: int = 5, seed: int = 0):
    """The write-up's synthetic task: random 5x5 grids, output = (colour + 1) mod 10.

    Returns (demonstration pairs, held-out pairs) as integer numpy grids."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.randint(0, 10, (n_train + n_test, size, size), generator=g).numpy()
    pairs = [(x, (x + 1) % 10) for x in grids]
    return pairs[:n_train], pairs[n_train:]


def homotopy_collapse_run(*, steps: int, seed: int = 0, log_every: int = 10, **overrides) -> dict:
    """Train the learner on the synthetic task with the full two-phase schedule (no early stop) and return the d_H
    trajectory, the canonical loss and f*'s exact accuracy on held-out grids."""
    from geoformer.models.arc_learner import ArcLearner, LearnerConfig, TaskBatch, fit, predict

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # tiny grids: a second thread only adds barriers on a busy machine
    demos, held = synthetic_task(seed=seed)
    cfg = LearnerConfig(**{"steps": steps, "early_stop": False, "tta": False, **overrides})
    batch = TaskBatch.from_pairs(demos)
    model = ArcLearner(len(demos), cfg)
    traj = fit(model, batch, log_every=log_every).trajectory
    phase1 = [t for t in traj if t["phase"] == 1]
    exact = [bool((predict(model, batch, x, x.shape, tta=False, attempts=1)[0] == y).all()) for x, y in held]
    return {
        "steps": steps,
        "d_h_start": traj[0]["d_h"],
        "d_h_phase1_peak": max(t["d_h"] for t in phase1),
        "d_h_phase1_end": phase1[-1]["d_h"],
        "d_h_final": traj[-1]["d_h"],
        "loss_c_start": traj[0]["loss_c"],
        "loss_c_final": traj[-1]["loss_c"],
        "held_out_exact": sum(exact),
        "held_out": len(exact),
        "trajectory": traj,
    }


COLLAPSE = R.Directional(
    "positive", 1.0, "decades", "a fall of less than 10x (one decade) is no collapse",
    effect="log10(d_H at the end of phase 1 / d_H at the end of phase 2)", size=(4.0, 6.0),
)  # fmt: skip
CANONICAL = R.Directional(
    "positive", 1.0, "decades", "a fall of less than 10x is not 'learning'",
    effect="log10(canonical loss at the start / at the end)",
)  # fmt: skip


def _log10_ratio(a: float, b: float) -> float:
    return math.log10(a / b) if a > 0 and b > 0 else math.nan


def _measure_collapse(ctx: ClaimContext, n: int) -> dict[str, Any]:
    steps = 200 if ctx.quick else 400
    ctx.record("synthetic task", {"steps": steps, "log_every": 10, "learner": "ArcLearner defaults"})
    path = ctx.out / "trajectories.json"
    runs: dict[int, dict[str, Any]] = {}
    try:  # runs of earlier looks (same steps) are kept; anything unreadable is recomputed
        import json

        saved = json.loads(path.read_text())
        runs = {int(k): v for k, v in saved.items() if v.get("steps") == steps}
    except (OSError, ValueError, AttributeError):
        runs = {}
    for s in range(n):
        if s not in runs:
            runs[s] = homotopy_collapse_run(steps=steps, seed=s)
            ctx.seeds.add(s)
    checkpoint.atomic_write_json(path, {str(k): v for k, v in runs.items()})
    seeds = list(range(n))
    ctx.seeds.update(seeds)
    return {
        "seeds": seeds,
        "collapse": [_log10_ratio(runs[s]["d_h_phase1_end"], runs[s]["d_h_final"]) for s in seeds],
        "canonical": [_log10_ratio(runs[s]["loss_c_start"], runs[s]["loss_c_final"]) for s in seeds],
        "phase1_rise": [_log10_ratio(runs[s]["d_h_phase1_peak"], runs[s]["d_h_start"]) for s in seeds],
        "held_out_exact": [runs[s]["held_out_exact"] for s in seeds],
        "d_h": [[runs[s]["d_h_start"], runs[s]["d_h_phase1_peak"], runs[s]["d_h_phase1_end"], runs[s]["d_h_final"]] for s in seeds],
    }  # fmt: skip


register(
    Row(
        id="000-homotopy-collapse",
        claim="Two-phase training collapses the homotopy distance in phase 2: 'Homotopy: 594 → 0.0055 (99.999% "
        "collapse!)' while 'Canonical: 421 → 0.10' (3-example synthetic task, 5x5 grids, colour + 1 mod 10).",
        origin=O,
        section="'Homotopy Class Collapse (Phase 2)' and 'Test Results'",
        experiment="ArcLearner (the ARC defaults) on the write-up's synthetic task, phase weights (50, 0.01, 1) then "
        "(1, 100, 50), 400 steps (quick: 200), no early stop, d_H logged every 10 steps; per seed, the phase-2 fall of "
        "d_H (end of phase 1 -> end) and the canonical loss's fall over training (cross-entropy here, MSE there: only "
        "falls are compared); f*'s exact accuracy on 20 held-out grids is shown, not judged (the write-up claims none)",
        rule=f"part 1: {COLLAPSE.text()} (the write-up's 594 -> 0.0055 is 5.0 decades); part 2: {CANONICAL.text()}; "
        f"{R.COMBINE_TEXT}",
        measure=_measure_collapse,
        decide=lambda data, level: R.combine({
            "d_H collapses in phase 2": COLLAPSE.decide(R.t_interval(data["collapse"], level)),
            "canonical loss falls": CANONICAL.decide(R.t_interval(data["canonical"], level)),
        }),  # fmt: skip
        describe=lambda data, d: (
            f"phase-2 fall of d_H {fmt(data['collapse'], '+.2f')} decades ({decision_note(d.parts['d_H collapses in phase 2'], '+.2f')}); "
            f"phase-1 rise {fmt(data.get('phase1_rise', []), '+.2f')} decades; canonical loss fall {fmt(data['canonical'], '+.2f')} "
            f"decades; f* exact on {fmt(data.get('held_out_exact', []), '.1f')}/20 held-out grids; d_H start/peak/end-1/final "
            f"per seed {[[float(f'{v:.3g}') for v in row] for row in data.get('d_h', [])][:5]}"
        ),
        examples={o: {"collapse": synthetic_values(COLLAPSE, o), "canonical": [3.0 + 0.01 * i for i in range(5)]}
                  for o in R.OUTCOMES},  # fmt: skip
        looks=R.Looks(),
        depends=LEARNER,
    )
)


# ------------------------------------------------------------------------------------------ ARC accuracy
ZERO = R.ZeroRate(0.05, "with 0 of n solved, n must be large enough to bound the rate below 5%",
                  quantity="the learner's pass@2 rate on ARC evaluation tasks")  # fmt: skip


def _arc_eval_dir(ctx: ClaimContext) -> Path:
    """$GEOFORMER_ARC_EVAL_DIR (e.g. a finished `geoformer arc eval` with the same settings, which the harness resumes
    rather than repeats), else a shared folder."""
    env = os.environ.get("GEOFORMER_ARC_EVAL_DIR")
    if env and not ctx.quick:
        return Path(env)
    return ctx.shared("arc1-eval" + ("-quick" if ctx.quick else ""))


def _committed_sample(ctx: ClaimContext) -> list[str]:
    """The committed 100-task ARC-AGI-1 evaluation sample (quick: its first 5 tasks)."""
    from geoformer.data import arc as A
    from geoformer.experiments.arc_eval import committed_ids_path

    ids = A.read_ids_file(committed_ids_path())
    return ids[:5] if ctx.quick else ids


def _measure_arc(ctx: ClaimContext, n: int) -> dict[str, Any]:
    from geoformer.experiments.arc_eval import run_arc_eval

    ids = _committed_sample(ctx)
    steps, budget = (60, 10.0) if ctx.quick else (300, 20.0)
    root = _arc_eval_dir(ctx)
    settings = {"dataset": "arc1", "split": "evaluation", "ids": ids, "steps": steps, "budget_cpu_s": budget, "seed": 0}
    ctx.record("arc eval", settings)
    res = {}
    for method in ("identity", "mode", "learner"):
        res[method] = run_arc_eval(
            dataset="arc1", split="evaluation", ids=ids, method=method, out=root / method, steps=steps,
            budget_s=600.0, budget_cpu_s=budget, seed=0, quiet=ctx.quiet,
            command=f"geoformer claims (000-arc-accuracy) -> {root / method}",
        )  # fmt: skip
    return {m: {k: v for k, v in s.items() if k not in ("learner", "per_task")} for m, s in res.items()}


def _decide_arc(data: dict[str, Any], level: float) -> R.Decision:
    ln = data["learner"]
    return ZERO.decide_counts(int(ln["test_outputs_solved"]), int(ln["test_outputs"]))


def _arc_text(data: dict[str, Any], d: R.Decision) -> str:
    parts = []
    for m in ("learner", "identity", "mode"):
        s = data[m]
        k, n = int(s["test_outputs_solved"]), int(s["test_outputs"])
        lo, hi = R.wilson(k, n)
        parts.append(f"{m} {k}/{n} test outputs ({100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]), task score "
                     f"{100 * s['accuracy']:.1f}%")
    ln = data["learner"]
    return (
        "; ".join(parts) + f" on {ln['tasks']} ARC-AGI-1 evaluation tasks (pass@2, Wilson 95%); learner "
        f"{ln['cpu_seconds_per_task']:.1f} CPU-s per task"
    )


def _arc_example(k: int, n: int) -> dict[str, Any]:
    s = {"test_outputs_solved": k, "test_outputs": n, "tasks": n, "accuracy": k / n, "cpu_seconds_per_task": 1.0}
    return {"learner": s, "identity": s, "mode": s}


register(
    Row(
        id="000-arc-accuracy",
        claim="The equivariant learner's test accuracy on ARC is 0% ('Improve test accuracy (currently 0% due to "
        "architecture mismatch)').",
        origin=O,
        section="'Next Steps' item 6",
        experiment="`geoformer arc eval --dataset arc1 --split evaluation --ids @configs/arc_eval_ids.txt --method "
        "learner|identity|mode --steps 300 --budget-cpu-s 20` (the committed 100-task sample, 2 attempts, exact match "
        "of every test output of a task); quick: 5 tasks, 60 steps; the identity and most-common-output baselines are "
        "scored by the same harness",
        rule=ZERO.text() + " (trials = the sample's test outputs; one is solved when one of the 2 attempts matches it "
        "exactly)",
        measure=_measure_arc,
        decide=_decide_arc,
        describe=_arc_text,
        examples={R.REPRODUCED: _arc_example(0, 100), R.NOT_REPRODUCED: _arc_example(3, 100),
                  R.INCONCLUSIVE: _arc_example(0, 20)},  # fmt: skip
        looks=R.SINGLE,
        depends=(*LEARNER, "src/geoformer/experiments/arc_eval.py", "configs/arc_eval_ids.txt"),
        kind="measurement",
    )
)


# ------------------------------------------------------------------------------------------ the hybrid solver's bar
BAR = 0.20  # CompressARC's published pass@2 on the ARC-AGI-1 evaluation set
HYBRID = {"steps": 300, "budget_cpu_s": 30.0, "search_budget_cpu_s": 10.0}  # docs/ARC.md's hybrid settings
HYBRID_QUICK = {"steps": 60, "budget_cpu_s": 10.0, "search_budget_cpu_s": 5.0}


def _measure_hybrid(ctx: ClaimContext, n: int) -> dict[str, Any]:
    from geoformer.experiments.arc_eval import run_arc_eval

    ids = _committed_sample(ctx)
    knobs = HYBRID_QUICK if ctx.quick else HYBRID
    root = _arc_eval_dir(ctx)
    ctx.record("arc eval", {"dataset": "arc1", "split": "evaluation", "ids": ids, "method": "hybrid", **knobs, "seed": 0})
    res = run_arc_eval(
        dataset="arc1", split="evaluation", ids=ids, method="hybrid", out=root / "hybrid", steps=knobs["steps"],
        budget_s=1200.0, budget_cpu_s=knobs["budget_cpu_s"], search_budget_cpu_s=knobs["search_budget_cpu_s"],
        seed=0, quiet=ctx.quiet, command=f"geoformer claims (arena-arc-compressarc) -> {root / 'hybrid'}",
    )  # fmt: skip
    keep = ("tasks", "solved", "accuracy", "test_outputs", "test_outputs_solved", "cpu_seconds_per_task",
            "cpu_seconds_per_task_max", "solved_by", "programs_found")  # fmt: skip
    return {k: res[k] for k in keep if k in res}


def _decide_hybrid(data: dict[str, Any], level: float) -> R.Decision:
    n, k = int(data.get("tasks", 0)), float(data.get("solved", 0.0))
    lo, hi = R.wilson(round(k), n, level)
    iv = R.Interval(k / n if n else math.nan, lo, hi, level, n)
    spec = {"form": "bar", "bar": BAR, "units": "(pass@2 task score)"}
    if n <= 0:
        return R.Decision(R.INCONCLUSIVE, "no task was scored", iv, spec=spec)
    if k / n >= BAR:
        return R.Decision(R.REPRODUCED, f"task score {100 * k / n:.1f}% >= {100 * BAR:.0f}% (Wilson {100 * lo:.1f}-"
                          f"{100 * hi:.1f})", iv, spec=spec)  # fmt: skip
    return R.Decision(R.NOT_REPRODUCED, f"task score {100 * k / n:.1f}% < {100 * BAR:.0f}% (Wilson {100 * lo:.1f}-"
                      f"{100 * hi:.1f})", iv, spec=spec)  # fmt: skip


def _hybrid_text(data: dict[str, Any], d: R.Decision) -> str:
    n, k = int(data["tasks"]), float(data["solved"])
    if n <= 0:
        return "no task was scored; " + d.reason
    lo, hi = R.wilson(round(k), n)
    by = ", ".join(f"{m or 'none'} {c}" for m, c in sorted((data.get("solved_by") or {}).items()))
    return (
        f"hybrid {k:g}/{n} tasks ({100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] Wilson 95%), "
        f"{int(data['test_outputs_solved'])}/{int(data['test_outputs'])} test outputs; solved by {by or 'none'}; "
        f"{data['cpu_seconds_per_task']:.1f} mean / {data.get('cpu_seconds_per_task_max', math.nan):.1f} max CPU-s "
        "per task on one core (CompressARC: about 20 GPU-minutes per task); " + d.reason
    )


def _hybrid_example(k: int, n: int) -> dict[str, Any]:
    return {"tasks": n, "solved": k, "accuracy": k / n if n else math.nan, "test_outputs": n,
            "test_outputs_solved": k, "cpu_seconds_per_task": 1.0, "cpu_seconds_per_task_max": 2.0}  # fmt: skip


register(
    Row(
        id="arena-arc-compressarc",
        claim="CompressARC, 'a 76K parameter model without any pretraining that solves 20% of evaluation puzzles' "
        "(ARC-AGI-1 evaluation, pass@2, per-task training at about 20 GPU-minutes a task): the bar geoformer's hybrid "
        "solver (symmetry-pruned program search, then the equivariant learner) is held to at CPU cost.",
        origin="compressarc",
        section="abstract, and the evaluation-set result",
        experiment="`geoformer arc eval --dataset arc1 --split evaluation --ids @configs/arc_eval_ids.txt --method "
        "hybrid --steps 300 --budget-cpu-s 30 --search-budget-cpu-s 10` (the committed 100-task sample, 2 attempts; "
        "a task scores the fraction of its test outputs matched exactly by one of the attempts, as ARC Prize scores "
        "it); quick: 5 tasks, 60 steps, 10 CPU-s (search 5)",
        rule=f"reproduced (the bar is reached) if the hybrid's task score on the sample is at least {100 * BAR:.0f}% "
        "(the point estimate: a bar is met or missed, so the row decides on the measured score and shows the 95% "
        f"Wilson interval beside it); not reproduced if it is below {100 * BAR:.0f}%; inconclusive only if no task was "
        "scored",
        measure=_measure_hybrid,
        decide=_decide_hybrid,
        describe=_hybrid_text,
        examples={R.REPRODUCED: _hybrid_example(23, 100), R.NOT_REPRODUCED: _hybrid_example(19, 100),
                  R.INCONCLUSIVE: _hybrid_example(0, 0)},  # fmt: skip
        looks=R.SINGLE,
        depends=(*LEARNER, "src/geoformer/arc", "src/geoformer/experiments/arc_eval.py", "configs/arc_eval_ids.txt"),
        kind="measurement",
    )
)


# ------------------------------------------------------------------------------------------ parameter savings
SAVING = R.Equivalence(0.964, 0.03, "(fraction)", "the write-up's '96% reduction', ±3 points",
                       quantity="parameter saving of shared encoder + adapters over N = 10 separate networks")  # fmt: skip
RATIO = R.Equivalence(math.log10(12 / 14976), 0.5, "(log10 ratio)", "the write-up's 'Individual params: 12, Canonical "
                      "params: 14,976, Ratio: 0.08% (1248x reduction!)', within a factor 3",
                      quantity="log10(individual parameters per example / canonical parameters)")  # fmt: skip


def parameter_counts(n_examples: int = 10) -> dict[str, int]:
    """Parameters of our learner for ``n_examples`` pairs against ``n_examples`` separate individual networks."""
    from geoformer.models.arc_learner import ArcLearner

    m = ArcLearner(n_examples)
    cnt = lambda mod: sum(p.numel() for p in mod.parameters())
    adapter = m.adapter_down[0].numel() + m.adapter_up[0].numel()
    individual = cnt(m.encoder) + cnt(m.head)  # one example's own morphism: encoder + head
    return {"total": cnt(m), "adapter_per_example": adapter, "individual_network": individual,
            "separate_networks": n_examples * individual, "canonical": cnt(m.canonical_head) + cnt(m.canonical_proj)}  # fmt: skip


def _measure_saving(ctx: ClaimContext, n: int) -> dict[str, Any]:
    ctx.record("parameter count", {"n_examples": 10, "learner": "ArcLearner defaults"})
    c = parameter_counts(10)
    return {**c, "saving": 1 - c["total"] / c["separate_networks"], "bound_equal_networks": 1 - 1 / 10,
            "log10_ratio": math.log10(c["adapter_per_example"] / c["canonical"])}  # fmt: skip


register(
    Row(
        id="000-adapter-parameter-savings",
        claim="A shared encoder with per-example adapters instead of one network per example: 'Memory savings for "
        "N=10: 483,840 params → 17,536 params (96% reduction!)'; per example 12 individual against 14,976 canonical "
        "parameters ('1248x reduction').",
        origin=O,
        section="'Architectural Improvement: Vectorized Sparse Attention' and 'Test Results' (Memory efficiency)",
        experiment="parameter count of ArcLearner (the ARC defaults) for N = 10 demonstration pairs (shared encoder, "
        "example attention, adapters, both heads) against N separate individual morphisms (encoder + head each); "
        "and one example's adapter parameters against the canonical morphism's (its head and projection)",
        rule=f"saving part: {SAVING.text()}; ratio part: {RATIO.text()}; deterministic counts; {R.COMBINE_TEXT}",
        measure=_measure_saving,
        decide=lambda data, level: R.combine({
            "96% saving": SAVING.decide(R.point(data["saving"])),
            "1248x ratio": RATIO.decide(R.point(data.get("log10_ratio", math.nan))),
        }),  # fmt: skip
        describe=lambda data, d: (
            f"N=10: {data['separate_networks']:,} params as separate networks -> {data['total']:,} shared + adapters "
            f"({100 * data['saving']:.1f}% saving; {data['adapter_per_example']} adapter params per example, "
            f"{data['individual_network']:,} per individual network). With equal-sized networks the saving is at most "
            "1 - 1/N = 90% at N = 10; the write-up's 96% compares 48,384-parameter separate networks with a "
            "14,976-parameter shared one, not like for like. Per example: "
            f"{data['adapter_per_example']} adapter vs {data.get('canonical', 0):,} canonical parameters "
            f"(1:{data.get('canonical', 0) / max(data['adapter_per_example'], 1):.0f}; the write-up's 12 individual "
            "parameters contradict its own 256 per example)"
        ),
        examples={o: {"saving": v, "log10_ratio": r, "separate_networks": 1, "total": 1, "adapter_per_example": 1,
                      "individual_network": 1, "canonical": 1000}
                  for o, v, r in ((R.REPRODUCED, 0.96, -3.1), (R.NOT_REPRODUCED, 0.85, -1.3),
                                  (R.INCONCLUSIVE, math.nan, -3.1))},  # fmt: skip
        looks=R.SINGLE,
        depends=LEARNER,
        kind="measurement",
    )
)

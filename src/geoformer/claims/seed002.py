"""Claims of write-up 002 ("cohomological" transformers: circuits, protected training, level structure, pruning).

The write-up reports no experiments: every claim is a proposal or an expectation (the author's test, at its end,
is whether such a model "out-performs a similarly scaled model trained using the traditional Transformer
architecture"). The rows test the ones a small model can test:

- circuits, protection, canaries, bridges: the capability suites of :mod:`geoformer.circuits.canaries` and the
  3 x 4 x 64 GPT of :mod:`geoformer.circuits.continual` (suites A = modus ponens, contrapositive, control learned
  first, then suites B = transitivity, copy);
- level structure and exactness: ``geoformer compare --preset levels`` (Shakespeare char, 3 x 96);
- pruning and the precision split: the gpt of ``geoformer compare --preset pruning`` (3 x 96, 2000 iterations).
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from geoformer.claims import rules as R
from geoformer.claims.common import aligned, decision_note, fmt, synthetic_values
from geoformer.claims.context import ClaimContext, finals
from geoformer.claims.registry import TRAINING, Row, Untestable, register, register_untestable
from geoformer.train import checkpoint

O = "002"
CIRCUITS = ("src/geoformer/circuits", "src/geoformer/models/gpt.py", "src/geoformer/attention")  # the GPT builds its attention there
LEVELS = (*TRAINING, "src/geoformer/models/levels.py", "src/geoformer/diagnostics/exactness.py", "configs/levels.toml")
PRUNING = (*TRAINING, "src/geoformer/circuits/pruning.py", "src/geoformer/circuits/quantize.py",
           "src/geoformer/circuits/studies.py", "configs/pruning.toml")  # fmt: skip
NATS = "0.02 nats of validation loss: the seed-to-seed spread of one run's loss at this budget, 1% of the loss"
PTS = "points of exact-match accuracy"
HIGH = 10.0  # the high-lr multiplier of phase B


def _paired(a: list[float], b: list[float], level: float, worst: str = "high") -> R.Interval:
    x, y = R.worst_as_inf(a, worst), R.worst_as_inf(b, worst)
    return R.t_interval(R.paired_differences(dict(enumerate(x)), dict(enumerate(y))), level)


# ------------------------------------------------------------------------------------------ continual learning
def _continual(ctx: ClaimContext, n: int) -> dict[str, Any]:
    """Rows of `geoformer circuits continual` for seeds 0..n-1: every method at 1x and 10x the phase-B lr, each
    method's main knob tuned first by `geoformer circuits tune` on the held-out tuning seed (shared by the rows;
    a seed already measured with the same settings is reused)."""
    from dataclasses import asdict

    from geoformer.circuits.continual import CircuitsConfig, quick_config, run_continual
    from geoformer.circuits.tuning import run_tune

    out = ctx.shared("circuits_continual" + ("-quick" if ctx.quick else ""))
    cfg = quick_config() if ctx.quick else CircuitsConfig()
    tuned = run_tune(out / "tune", lr_mults=(1.0, HIGH), quick=ctx.quick, quiet=ctx.quiet, resume=True)
    ctx.record("circuits continual", asdict(cfg) | {"knobs": tuned["chosen"], "tune_seed": tuned["seed"]})
    res = run_continual(out, seed_ids=list(range(n)), lr_mults=(1.0, HIGH), quick=ctx.quick, quiet=ctx.quiet,
                        resume=True, knobs=tuned["chosen"])  # fmt: skip
    ctx.seeds.update(range(n))
    table: dict[str, Any] = {"seeds": list(range(n)), "lr_b": cfg.lr_b, "knobs": tuned["chosen"]}
    for r in res["rows"]:
        if r["seed"] >= n:
            continue
        key = f"{r['method']}@{'high' if r['lr_b'] > cfg.lr_b else 'base'}"
        ctx.codes[f"circuits continual/seed{r['seed']}/{key}"] = r.get("code")
        col = table.setdefault(key, {"forgetting": [math.nan] * n, "b_after": [math.nan] * n, "rollbacks": [math.nan] * n,
                                     "stalled": [math.nan] * n})  # fmt: skip
        col["forgetting"][r["seed"]] = 100 * r["forgetting"]
        col["b_after"][r["seed"]] = 100 * r["b_after"]
        can = r.get("extra", {}).get("canary") or {}
        col["rollbacks"][r["seed"]] = can.get("rollbacks", math.nan)
        col["stalled"][r["seed"]] = float(can["stalled"]) if "stalled" in can else math.nan
    return table


FORGET = R.Bound("below", 5.0, "points", "'without damaging the protected capabilities': at most 5 points lost on A",
                 quantity="forgetting of A")  # fmt: skip
LEARNS_B = R.Bound("below", 10.0, "points", "the new suites must be learned too: B accuracy within 10 points of plain "
                   "training's (90% of a typical 90-100% B score)", quantity="B accuracy(naive) - B accuracy(method)")  # fmt: skip


def _method_parts(data: dict[str, Any], method: str, lr: str, level: float) -> dict[str, R.Decision]:
    m, nv = data[f"{method}@{lr}"], data[f"naive@{lr}"]
    return {
        f"{lr} lr: A kept": FORGET.decide(R.t_interval(R.worst_as_inf(m["forgetting"], "high"), level)),
        f"{lr} lr: B learned": LEARNS_B.decide(_paired(nv["b_after"], m["b_after"], level, "low")),
    }


def _continual_text(data: dict[str, Any], methods: list[tuple[str, str]], d: R.Decision) -> str:
    parts = []
    for method, lr in methods:
        for who in (method, "naive"):
            c = data.get(f"{who}@{lr}")
            if c:
                roll = f", rollbacks {fmt(c['rollbacks'], '.0f')}" if "canary" in who else ""
                parts.append(f"{who} at {lr} lr: forgetting {fmt(c['forgetting'], '.1f')} pts, B {fmt(c['b_after'], '.1f')}%{roll}")
    parts.append("; ".join(f"{k}: {decision_note(p, '+.1f', 'pts')}" for k, p in d.parts.items()))
    return "; ".join(dict.fromkeys(parts))


def _continual_example(outcome: str, methods: list[tuple[str, str]]) -> dict[str, Any]:
    n = 5
    spread = [0.0, 0.5, -0.5, 0.3, -0.3]
    good = {"forgetting": [1.0 + s for s in spread], "b_after": [90.0 + s for s in spread], "rollbacks": [1.0] * n}
    bad = {"forgetting": [50.0 + s for s in spread], "b_after": [5.0 + s for s in spread], "rollbacks": [1.0] * n}
    wide = {"forgetting": [1.0, 20.0, 0.0, 9.0, 2.0], "b_after": [90.0, 60.0, 95.0, 70.0, 91.0], "rollbacks": [1.0] * n}
    naive = {"forgetting": [50.0] * n, "b_after": [92.0 + s for s in spread], "rollbacks": [math.nan] * n}
    m = {R.REPRODUCED: good, R.NOT_REPRODUCED: bad, R.INCONCLUSIVE: wide}[outcome]
    out: dict[str, Any] = {"seeds": list(range(n))}
    for method, lr in methods:
        out[f"{method}@{lr}"], out[f"naive@{lr}"] = m, naive
    out["naive@base"] = out.get("naive@base", naive)
    return out


CONTINUAL_EXPERIMENT = (
    "`geoformer circuits tune --lr-mults 1,10` (each method's main knob over a grid of 4 on the held-out tuning "
    "seed 100, criterion (A + B) / 2), then `geoformer circuits continual --lr-mults 1,10 --knobs ...` with all "
    "methods: GPT 3x4x64 trained on suites A (modus ponens, contrapositive, control) to 98% on a train-split check, "
    "then 500 AdamW steps on suites B (transitivity, copy) at the phase-B lr 1e-3 or 10x it; forgetting = drop of "
    "mean A test exact-match, B = mean B test exact-match (%)"
)
PROTECT = ("zone protection: per-element update scales from |theta * grad| on A (the write-up's graduated zones, "
           "x0.01 / x0.1 / x0.5; zone sizes tuned over 0.5, 1, 2, 3 x (2%, 8%, 20%))")  # fmt: skip

register(
    Row(
        id="002-protection-high-lr",
        claim="Protecting the parameters of identified circuits ('dramatic learning rate reduction (like 0.01x) to "
        "parameters identified as part of critical circuits') lets training take 'more dramatic optimization steps "
        "(high learning rates)' without damaging the protected capabilities.",
        origin=O,
        section="'Training Phases' (3. Aggressive Training Phase) and 'graduated protection zones'",
        experiment=CONTINUAL_EXPERIMENT + f"; method protect ({PROTECT}) at 10x the phase-B lr",
        rule=f"at 10x lr: part A: {FORGET.text()}; part B: {LEARNS_B.text()}, paired by seed; {R.COMBINE_TEXT}",
        measure=_continual,
        decide=lambda data, level: R.combine(_method_parts(data, "protect", "high", level)),
        describe=lambda data, d: _continual_text(data, [("protect", "high")], d),
        examples={o: _continual_example(o, [("protect", "high")]) for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=CIRCUITS,
    )
)

register(
    Row(
        id="002-canary-rollback",
        claim="A canary monitor ('the second you get even one of these wrong') that rolls back the update and protects "
        "the responsible parameters keeps the capabilities intact while training goes on ('self-healing', 'minimally "
        "restrictive').",
        origin=O,
        section="'CircuitMonitor' / '2. Smart Rollback Strategy' / 'This is particularly elegant because'",
        experiment=CONTINUAL_EXPERIMENT + f"; method canary: {PROTECT}, plus a CanaryMonitor every 25 steps on 200 "
        "train-split examples per A suite, tolerance tuned over 1, 2, 5, 10 points, rollback to the last accepted "
        "state, mask grown by the 0.5% most-moved elements; at 1x and 10x the phase-B lr",
        rule=f"at each lr: part A: {FORGET.text()}; part B: {LEARNS_B.text()} (a method that stops learning keeps A "
        f"only by not training), paired by seed; {R.COMBINE_TEXT}",
        measure=_continual,
        decide=lambda data, level: R.combine({**_method_parts(data, "canary", "base", level),
                                              **_method_parts(data, "canary", "high", level)}),  # fmt: skip
        describe=lambda data, d: _continual_text(data, [("canary", "base"), ("canary", "high")], d),
        examples={o: _continual_example(o, [("canary", "base"), ("canary", "high")]) for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=CIRCUITS,
    )
)

SPEEDUP = R.Directional("positive", 5.0, "points", "a gain under 5 points of B accuracy at the same step count is no "
                        "speed-up", effect="B accuracy(protect, 10x lr) - B accuracy(naive, 1x lr)")  # fmt: skip


def _decide_speedup(data: dict[str, Any], level: float) -> R.Decision:
    p, nv = data["protect@high"], data["naive@base"]
    return R.combine({
        "B learned faster": SPEEDUP.decide(_paired(p["b_after"], nv["b_after"], level, "low")),
        "A kept": FORGET.decide(R.t_interval(R.worst_as_inf(p["forgetting"], "high"), level)),
    })  # fmt: skip


register(
    Row(
        id="002-protected-training-speedup",
        claim="Protected high-lr training 'could dramatically speed up training while maintaining reliability of core "
        "reasoning capabilities'.",
        origin=O,
        section="'Implementation details' after 'Training Phases'",
        experiment=CONTINUAL_EXPERIMENT + f"; {PROTECT} at 10x lr against plain training at the base lr, same 500 "
        "steps: a speed-up shows as more of B learned in the same steps",
        rule=f"part 1: {SPEEDUP.text()}, paired by seed; part 2: {FORGET.text()} at 10x lr; {R.COMBINE_TEXT}",
        measure=_continual,
        decide=_decide_speedup,
        describe=lambda data, d: _continual_text(data, [("protect", "high")], d) + f"; naive at base lr: B "
        f"{fmt(data['naive@base']['b_after'], '.1f')}%",
        examples={
            R.REPRODUCED: {"protect@high": {"b_after": [95.0, 95.5, 94.5, 95.2, 94.8], "forgetting": [1.0, 1.5, 0.5, 1.2, 0.8]},
                           "naive@base": {"b_after": [70.0, 70.5, 69.5, 70.2, 69.8]}},
            R.NOT_REPRODUCED: {"protect@high": {"b_after": [70.0, 70.5, 69.5, 70.2, 69.8], "forgetting": [40.0, 41, 39, 40, 40]},
                               "naive@base": {"b_after": [70.0, 70.5, 69.5, 70.2, 69.8]}},
            R.INCONCLUSIVE: {"protect@high": {"b_after": [95.0, 60, 90, 50, 80], "forgetting": [1.0, 1.5, 0.5, 1.2, 0.8]},
                             "naive@base": {"b_after": [70.0, 70.5, 69.5, 70.2, 69.8]}},
        },  # fmt: skip
        looks=R.Looks(),
        depends=CIRCUITS,
    )
)


LESS_THAN_EWC = R.Directional("positive", 2.0, "points", "2 points of A accuracy: the smallest forgetting difference "
                              "that is more than the seed-to-seed noise of a 3000-example test score",
                              effect="forgetting(ewc) - forgetting(subspace)")  # fmt: skip


def _subspace_example(outcome: str) -> dict[str, Any]:
    out = _continual_example(outcome, [("subspace", "high")])
    spread = [0.0, 0.5, -0.5, 0.3, -0.3]
    out["ewc@high"] = {"forgetting": [20.0 + v for v in spread], "b_after": [90.0 + v for v in spread],
                       "rollbacks": [math.nan] * 5}  # fmt: skip
    return out


def _decide_subspace(data: dict[str, Any], level: float) -> R.Decision:
    s, e = data["subspace@high"], data["ewc@high"]
    return R.combine({
        **_method_parts(data, "subspace", "high", level),
        "high lr: less forgetting than EWC": LESS_THAN_EWC.decide(_paired(e["forgetting"], s["forgetting"], level)),
    })  # fmt: skip


register(
    Row(
        id="002-subspace-protection",
        claim="Protection in its principled form, updates kept out of the subspace that carries the protected "
        "capabilities, lets training take 'more dramatic optimization steps (high learning rates)' 'without "
        "damaging' them, and does so better than EWC.",
        origin=O,
        section="'Training Phases' (3. Aggressive Training Phase); the subspace form is Gradient Projection Memory "
        "(Saha et al., ICLR 2021), the issue's principled reading of the write-up's protection",
        experiment=CONTINUAL_EXPERIMENT + "; method subspace: every block's linear layers and the tied embedding "
        "updated only outside the span of A's inputs to them (SVD energy threshold tuned over 0.6, 0.8, 0.9, 0.97; "
        "rows of the tokens and positions A uses and the norm gains frozen); against ewc (lambda tuned over 0.01, 0.1, "
        "1, 10 x mean Fisher) at 10x the phase-B lr",
        rule=f"at 10x lr: part A: {FORGET.text()}; part B: {LEARNS_B.text()}; part C: {LESS_THAN_EWC.text()}; all "
        f"paired by seed; {R.COMBINE_TEXT}",
        measure=_continual,
        decide=_decide_subspace,
        describe=lambda data, d: _continual_text(data, [("subspace", "high"), ("ewc", "high")], d),
        examples={o: _subspace_example(o) for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=CIRCUITS,
    )
)


# ------------------------------------------------------------------------------------------ models on all suites
MODEL_LOOKS = R.Looks((3, 5))  # each model trains on all five suites for up to 11,000 steps
CONVERGED = 0.95  # a model attribution can be read from must score at least this on every suite's test split


def _suite_models(ctx: ClaimContext, n: int):
    """The first ``n`` models (seeds 0, 1, ...) that converge on all five suites (>= 95% test exact-match on each);
    unconverged seeds are skipped and reported, at most 2n + 2 are tried."""
    from dataclasses import asdict

    from geoformer.circuits.continual import CircuitsConfig, quick_config, train_all

    torch.set_num_threads(1)
    cfg = quick_config() if ctx.quick else CircuitsConfig()
    ctx.record("circuits models", asdict(cfg))
    root = ctx.shared("circuits_models" + ("-quick" if ctx.quick else ""))
    good, skipped = [], []
    threshold = 0.0 if ctx.quick else CONVERGED
    for s in range(2 * n + 2):
        if len(good) == n:
            break
        model, res = train_all(cfg, s, root / f"seed{s}", ctx.quiet)
        ctx.seeds.add(s)
        ctx.codes[f"circuits models/seed{s}"] = res.get("code")
        (good if min(res["test_acc"].values()) >= threshold else skipped).append((s, model, res))
    return cfg, good, [(s, r["test_acc"]) for s, _, r in skipped]


def _cached(ctx: ClaimContext, name: str, key: dict[str, Any], fn):
    """``fn()`` cached in the row's folder under ``name`` while ``key`` (the settings) is unchanged."""
    path = ctx.out / f"{name}.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["value"]
    except (OSError, ValueError, AttributeError):
        pass
    value = fn()
    checkpoint.atomic_write_json(path, {"key": key, "value": value})
    return value


def _measure_bridges(ctx: ClaimContext, n: int) -> dict[str, Any]:
    from geoformer.circuits.continual import _jsonable, attribute, bridge_analysis

    cfg, good, skipped = _suite_models(ctx, n)
    per = []
    for s, model, res in good:
        br = _cached(ctx, f"bridges_seed{s}", {"seed": s, "quick": ctx.quick},
                     lambda model=model, s=s: _jsonable(bridge_analysis(model, attribute(model, cfg, s, neurons=False), cfg, s)))  # fmt: skip
        per.append({"seed": s, "min_test_acc": min(res["test_acc"].values()), **{k: br[k] for k in (
            "max_bridge_score", "n_bridges", "spearman_norm_vs_summed_drop", "mean_drop_top_bridge", "mean_drop_top_norm")}})  # fmt: skip
    return {"models": per, "skipped": skipped}


def _decide_bridges_exist(data: dict[str, Any], level: float) -> R.Decision:
    has = [m["max_bridge_score"] >= 2 for m in data["models"]]
    if len(has) < 3:
        return R.Decision(R.INCONCLUSIVE, f"only {len(has)} converged models")
    if all(has):
        return R.Decision(R.REPRODUCED, f"every one of the {len(has)} models has a head whose ablation breaks >= 2 suites")
    if not any(has):
        return R.Decision(R.NOT_REPRODUCED, f"none of the {len(has)} models has such a head")
    return R.Decision(R.INCONCLUSIVE, f"{sum(has)} of {len(has)} models have one")


def _bridge_text(data: dict[str, Any], d: R.Decision) -> str:
    ms = data["models"]
    return (
        f"{len(ms)} converged models (seeds {[m['seed'] for m in ms]}; skipped {len(data.get('skipped', []))}); bridge "
        f"heads per model {[m['n_bridges'] for m in ms]}, max bridge score {[m['max_bridge_score'] for m in ms]}; "
        f"Spearman(head weight norm, summed accuracy drop) {[round(m['spearman_norm_vs_summed_drop'], 2) for m in ms]}; "
        f"ablating the top-2 bridge heads drops {fmt([100 * m['mean_drop_top_bridge'] for m in ms], '.1f')} pts vs top-2 "
        f"norm heads {fmt([100 * m['mean_drop_top_norm'] for m in ms], '.1f')} pts; {decision_note(d, '.2f')}"
    )


def _bridge_example(scores: list[int], rho: list[float]) -> dict[str, Any]:
    return {"models": [{"seed": i, "min_test_acc": 0.99, "max_bridge_score": s, "n_bridges": int(s >= 2),
                        "spearman_norm_vs_summed_drop": r, "mean_drop_top_bridge": 0.4, "mean_drop_top_norm": 0.2}
                       for i, (s, r) in enumerate(zip(scores, rho, strict=True))], "skipped": []}  # fmt: skip


BRIDGE_EXPERIMENT = (
    "`geoformer circuits attribute`: GPT 3x4x64 trained on all five suites (models below 95% test exact-match on some "
    "suite are skipped and counted); every head mean-ablated alone on 500 test examples per suite; a head's bridge "
    "score = number of suites whose accuracy drops by more than 10 points"
)

register(
    Row(
        id="002-bridges-exist",
        claim="Some components are bridges: they 'basically can't be modified without quickly causing catastrophic loss "
        "in performance across a wide array of measured tasks'.",
        origin=O,
        section="'corpus callosum' prompt and '1. Specific Attention Heads'",
        experiment=BRIDGE_EXPERIMENT,
        rule="per model, a bridge exists if some head has bridge score >= 2; reproduced if every model has one "
        "(at least 3 models), not reproduced if none has, else inconclusive (also with fewer than 3 models)",
        measure=_measure_bridges,
        decide=_decide_bridges_exist,
        describe=_bridge_text,
        examples={R.REPRODUCED: _bridge_example([3, 2, 4], [0.8] * 3), R.NOT_REPRODUCED: _bridge_example([1, 0, 1], [0.8] * 3),
                  R.INCONCLUSIVE: _bridge_example([3, 1, 2], [0.8] * 3)},  # fmt: skip
        looks=MODEL_LOOKS,
        depends=CIRCUITS,
    )
)

MAGNITUDE = R.Bound("below", 0.5, "(Spearman rho)", "magnitude 'under-predicts' importance if it ranks heads at most "
                    "moderately well (rho < 0.5)", quantity="Spearman(head weight norm, summed accuracy drop)")  # fmt: skip

register(
    Row(
        id="002-bridges-beyond-magnitude",
        claim="Critical components matter more than their weight magnitude suggests ('Some weights might be small in "
        "magnitude but critical').",
        origin=O,
        section="'Cohomological Pruning' and 'critical bridge areas'",
        experiment=BRIDGE_EXPERIMENT + "; per model, Spearman rank correlation over the 12 heads between the head's "
        "weight norm (its q, k, v rows and c_proj columns) and its summed accuracy drop over the five suites",
        rule=MAGNITUDE.text() + " (t-interval over models)",
        measure=_measure_bridges,
        decide=lambda data, level: MAGNITUDE.decide(R.t_interval([m["spearman_norm_vs_summed_drop"] for m in data["models"]], level)),
        describe=_bridge_text,
        examples={R.REPRODUCED: _bridge_example([3, 2, 4], [0.1, 0.12, 0.11]),
                  R.NOT_REPRODUCED: _bridge_example([3, 2, 4], [0.85, 0.87, 0.86]),
                  R.INCONCLUSIVE: _bridge_example([3, 2, 4], [0.1, 0.9, 0.5])},  # fmt: skip
        looks=MODEL_LOOKS,
        depends=CIRCUITS,
    )
)

FRACTION = R.Equivalence(-4.5, 0.5, "(log10 fraction)", "'maybe 0.001% to 0.01%' of the parameters: log10 of the "
                         "fraction in (-5, -4)", quantity="mean over suites of log10(circuit size / parameters)")  # fmt: skip


def _measure_fraction(ctx: ClaimContext, n: int) -> dict[str, Any]:
    from geoformer.circuits.continual import SUITES, suites
    from geoformer.circuits.studies import minimal_breaking_set

    cfg, good, skipped = _suite_models(ctx, n)
    per = []
    for s, model, _ in good:
        tests = suites(cfg, SUITES, "test", s, n=300)
        res = _cached(ctx, f"fraction_seed{s}", {"seed": s, "quick": ctx.quick},
                      lambda model=model, tests=tests: {k: minimal_breaking_set(model, t) for k, t in tests.items()})  # fmt: skip
        fr = [r["fraction"] for r in res.values()]
        per.append({"seed": s, "per_suite": res,
                    "log10_fraction": (sum(math.log10(f) for f in fr) / len(fr)) if all(fr) else math.nan})  # fmt: skip
    return {"models": per, "skipped": skipped}


register(
    Row(
        id="002-circuit-fraction",
        claim="The parameters critical to a reasoning capability are a tiny fraction of the model: 'maybe 0.001% to "
        "0.01%'.",
        origin=O,
        section="'Size and Distribution'",
        experiment="the converged all-suites models of 002-bridges-exist; per model and suite, parameter elements ranked "
        "by |theta * d(answer log-prob)/d theta| on 300 test examples and zeroed in that order: the smallest k that "
        "halves the suite's accuracy (bisection; a greedy upper bound on the circuit's size), as a fraction of all "
        "parameters",
        rule=FRACTION.text() + " (t-interval over models of the per-model mean over the five suites)",
        measure=_measure_fraction,
        decide=lambda data, level: FRACTION.decide(R.t_interval([m["log10_fraction"] for m in data["models"]], level)),
        describe=lambda data, d: (
            "log10(fraction) per model " + str([round(m["log10_fraction"], 2) for m in data["models"]]) + "; smallest "
            "breaking sets per suite: " + "; ".join(
                f"seed {m['seed']}: " + ", ".join(f"{k} {v['k']}" for k, v in m["per_suite"].items()) for m in data["models"])
            + f" (of {data['models'][0]['per_suite'][next(iter(data['models'][0]['per_suite']))]['total']:,} parameters); "
            + decision_note(d, "+.2f")
            if data["models"] and data["models"][0].get("per_suite") else decision_note(d, "+.2f")
        ),  # fmt: skip
        examples={o: {"models": [{"seed": i, "log10_fraction": v} for i, v in enumerate(synthetic_values(FRACTION, o))],
                      "skipped": []} for o in R.OUTCOMES},  # fmt: skip
        looks=MODEL_LOOKS,
        depends=CIRCUITS,
    )
)


# ------------------------------------------------------------------------------------------ level structure
def _levels(ctx: ClaimContext, n: int, variants: list[str]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    res = ctx.compare("levels", variants=variants, seeds=n,
                      sets=[("train.max_iters", 150), ("train.eval_interval", 50)] if ctx.quick else ())  # fmt: skip
    f = finals(res)
    seeds = sorted(f["gpt"])
    return res, {"seeds": seeds, **{v: aligned(f[v], seeds) for v in f}}


def composite_ratios(folder: str, variant: str, seeds: list[int]) -> list[float]:
    """Per seed, the largest composite ratio over consecutive transition maps of a trained level model."""
    from pathlib import Path

    from geoformer.diagnostics.exactness import composite_ratio
    from geoformer.train.trainer import load_model

    out = []
    for s in seeds:
        d = Path(folder) / "runs" / variant / f"seed{s}"
        if not (d / "ckpt.pt").is_file():
            out.append(math.nan)
            continue
        model, _, _ = load_model(d)
        maps = [w.detach() for w in model.transition_maps()]
        out.append(max(composite_ratio(a, b) for a, b in zip(maps[:-1], maps[1:], strict=True)))
    return out


SCHEDULE = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(mixed) - val loss(gpt)")
BEATS_GPT = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(levels) - val loss(gpt)")
BEYOND_SCHEDULE = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(levels) - val loss(mixed)")
NEAR_EXACT = R.Bound("below", 0.1, "(composite ratio)", "'near an exact sequence': the composite of consecutive maps at "
                     "most a tenth of what unrelated maps give", quantity="max over consecutive transition maps of "
                     "sqrt(n) ||d1 d0||_F / (||d1||_F ||d0||_F)")  # fmt: skip
LEVELS_EXPERIMENT = (
    "`geoformer compare --preset levels` (Shakespeare char, 3 blocks x 96, 800 iterations x 16 x 64 tokens, parameter "
    "matched 346,848 vs 346,656): gpt; mixed = the level attention schedule alone (local window 8 / top-8 / global, no "
    "transition maps); levels_free = with transition maps, no penalty; levels = penalty weight 1; levels_exact = maps "
    "exact by construction (rank 48)"
)


MODERN_SCHEDULE = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(mixed_modern) - val loss(gpt_modern)")
BEATS_MODERN = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(levels_modern) - val loss(gpt_modern)")


def _measure_schedule(ctx: ClaimContext, n: int) -> dict[str, Any]:
    _, f = _levels(ctx, n, ["gpt", "mixed", "gpt_modern", "mixed_modern"])
    return {"a": f["mixed"], "b": f["gpt"], "a_modern": f["mixed_modern"], "b_modern": f["gpt_modern"]}


register(
    Row(
        id="002-level-attention-schedule",
        claim="Level-specific processing helps: 'Lower levels: dense, local attention patterns'; 'Higher levels: sparse, "
        "global attention focused on abstract relationships'.",
        origin=O,
        section="'3. Level-Specific Processing'",
        experiment=LEVELS_EXPERIMENT + "; mixed against gpt, and the same pair on the modern recipe (mixed_modern "
        "against gpt_modern: RMSNorm, rotary, QK-norm, ReLU^2, zero-init projections, Muon)",
        rule=f"nanoGPT recipe: {SCHEDULE.text()}; modern recipe: {MODERN_SCHEDULE.text()}; paired by seed; {R.COMBINE_TEXT}",
        measure=_measure_schedule,
        decide=lambda data, level: R.combine({
            "nanoGPT recipe": SCHEDULE.decide(_paired(data["a"], data["b"], level)),
            "modern recipe": MODERN_SCHEDULE.decide(_paired(data["a_modern"], data["b_modern"], level)),
        }),  # fmt: skip
        describe=lambda data, d: (
            f"val loss mixed {fmt(data['a'])}, gpt {fmt(data['b'])}, mixed_modern {fmt(data['a_modern'])}, gpt_modern "
            f"{fmt(data['b_modern'])}; mixed - gpt {decision_note(d.parts['nanoGPT recipe'], '+.4f', 'nats')}; "
            f"mixed_modern - gpt_modern {decision_note(d.parts['modern recipe'], '+.4f', 'nats')}"
        ),
        examples={o: {"a": [2.0 + v for v in synthetic_values(SCHEDULE, o)], "b": [2.0] * 5,
                      "a_modern": [2.0 + v for v in synthetic_values(SCHEDULE, o)], "b_modern": [2.0] * 5}
                  for o in R.OUTCOMES},  # fmt: skip
        looks=R.Looks(),
        depends=LEVELS,
    )
)


def _measure_structure(ctx: ClaimContext, n: int) -> dict[str, Any]:
    res, f = _levels(ctx, n, ["gpt", "mixed", "levels", "levels_free", "levels_exact", "gpt_modern", "levels_modern"])
    return {**f, "composite": composite_ratios(res["folder"], "levels", f["seeds"])}


def _decide_structure(data: dict[str, Any], level: float) -> R.Decision:
    return R.combine({
        "beats gpt": BEATS_GPT.decide(_paired(data["levels"], data["gpt"], level)),
        "beats the modern gpt": BEATS_MODERN.decide(_paired(data["levels_modern"], data["gpt_modern"], level)),
        "beyond the attention schedule": BEYOND_SCHEDULE.decide(_paired(data["levels"], data["mixed"], level)),
        "maps near exact": NEAR_EXACT.decide(R.t_interval(data["composite"], level)),
    })  # fmt: skip


register(
    Row(
        id="002-level-structure-helps",
        claim="A level-structured transformer (local H0, sparse H1, global H2 attention joined by transition maps kept "
        "near an exact sequence) learns better than a standard transformer, because of that structure ('More efficient "
        "training (following natural mathematical structure)').",
        origin=O,
        section="'Cohomological Architecture Search' / 'This could lead to:' / 'Sheaf-Theoretic Loss Functions'",
        experiment=LEVELS_EXPERIMENT + "; levels against gpt, levels_modern against gpt_modern (both on the modern "
        "recipe), and levels against mixed (what the attention schedule alone gives); exactness of the trained maps by the composite ratio (1 for unrelated maps, 0 for exact), which unlike "
        "the trained penalty cannot be met by inflating one singular value",
        rule=f"part 1: {BEATS_GPT.text()}; part 2 (on the modern recipe): {BEATS_MODERN.text()}; part 3 (credit to the "
        f"structure, not the schedule): {BEYOND_SCHEDULE.text()}; part 4: {NEAR_EXACT.text()}; paired by seed; "
        f"{R.COMBINE_TEXT}",
        measure=_measure_structure,
        decide=_decide_structure,
        describe=lambda data, d: (
            f"val loss gpt {fmt(data['gpt'])}, mixed {fmt(data['mixed'])}, levels_free {fmt(data['levels_free'])}, levels "
            f"{fmt(data['levels'])}, levels_exact {fmt(data['levels_exact'])}, gpt_modern {fmt(data['gpt_modern'])}, "
            f"levels_modern {fmt(data['levels_modern'])}; composite ratio of levels' maps "
            f"{fmt(data['composite'], '.2f')}; " + "; ".join(f"{k}: {decision_note(p, '+.4f')}" for k, p in d.parts.items())
        ),
        examples={
            R.REPRODUCED: {"gpt_modern": [2.1] * 5, "levels_modern": [2.0 + 0.001 * i for i in range(5)],
                           "gpt": [2.1] * 5, "mixed": [2.05] * 5, "levels": [2.0 + 0.001 * i for i in range(5)],
                           "levels_free": [2.0] * 5, "levels_exact": [2.0] * 5, "composite": [0.05 + 0.001 * i for i in range(5)]},
            R.NOT_REPRODUCED: {"gpt_modern": [2.1] * 5, "levels_modern": [2.0 + 0.001 * i for i in range(5)],
                               "gpt": [2.1] * 5, "mixed": [2.0] * 5, "levels": [2.0 + 0.001 * i for i in range(5)],
                               "levels_free": [2.0] * 5, "levels_exact": [2.0] * 5, "composite": [0.9 + 0.001 * i for i in range(5)]},
            R.INCONCLUSIVE: {"gpt_modern": [2.1] * 5, "levels_modern": [2.0 + 0.001 * i for i in range(5)],
                             "gpt": [2.1] * 5, "mixed": [2.05] * 5, "levels": [2.0, 2.1, 1.9, 2.2, 1.8],
                             "levels_free": [2.0] * 5, "levels_exact": [2.0] * 5, "composite": [0.05 + 0.001 * i for i in range(5)]},
        },  # fmt: skip
        looks=R.Looks(),
        depends=LEVELS,
    )
)

PENALTY = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(levels) - val loss(levels_free)")
EXACT = R.Directional("negative", 0.02, "nats", NATS, effect="val loss(levels_exact) - val loss(levels_free)")

for _id, _claim, _section, _rule, _a, _b in (
    ("002-exactness-penalty-helps", "Penalising violations of exactness between levels improves the model ('Include "
     "terms that measure how well certain cohomological invariants are preserved').",
     "'Sheaf-Theoretic Loss Functions' / 'Structural Regularization'", PENALTY, "levels", "levels_free"),
    ("002-exact-sequence-helps", "Transition maps that form an exact sequence between levels (im d_0 = ker d_1) make the "
     "level-structured model better ('networks where the exact sequences factor cleanly through the layers').",
     "'Cohomological Architecture Search'", EXACT, "levels_exact", "levels_free"),
):  # fmt: skip

    def _m(ctx, n, a=_a, b=_b):
        _, f = _levels(ctx, n, ["gpt", a, b])
        return {"a": f[a], "b": f[b], "gpt": f["gpt"]}

    register(
        Row(
            id=_id, claim=_claim, origin=O, section=_section,
            experiment=LEVELS_EXPERIMENT + f"; {_a} against {_b}",
            rule=_rule.text() + "; paired by seed",
            measure=_m,
            decide=lambda data, level, rule=_rule: rule.decide(_paired(data["a"], data["b"], level)),
            describe=lambda data, d, a=_a, b=_b: (f"val loss {a} {fmt(data['a'])}, {b} {fmt(data['b'])}, gpt "
                                                   f"{fmt(data.get('gpt', []))}; {a} - {b} {decision_note(d, '+.4f', 'nats')}"),
            examples={o: {"a": [2.0 + v for v in synthetic_values(_rule, o)], "b": [2.0] * 5} for o in R.OUTCOMES},
            looks=R.Looks(), depends=LEVELS,
        )
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ precision and pruning
def _pruning_models(ctx: ClaimContext, n: int) -> tuple[str, list[int]]:
    res = ctx.compare("pruning", variants=["gpt"], seeds=n,
                      sets=[("train.max_iters", 150), ("train.eval_interval", 50)] if ctx.quick else ())  # fmt: skip
    return res["folder"], sorted(int(r["seed"]) for r in res["variants"]["gpt"]["runs"])


PRECISION = R.Directional("positive", 0.005, "nats", "0.005 nats, a quarter percent of the loss: below that, giving "
                          "attention more bits than the FFN changes nothing anyone would measure",
                          effect="dLoss(attention at int4) - dLoss(one FFN half at int4), equal weight counts")  # fmt: skip


def _measure_precision(ctx: ClaimContext, n: int) -> dict[str, Any]:
    from geoformer.circuits.studies import precision_study

    folder, seeds = _pruning_models(ctx, n)
    study = _cached(ctx, "precision", {"seeds": seeds, "quick": ctx.quick}, lambda: precision_study(folder, seeds))
    rows = study["per_seed"]
    col = {k: [r[k] for r in rows] for k in rows[0] if k != "seed"}
    half = [(a + b) / 2 for a, b in zip(col["ffn_fc@int4"], col["ffn_proj@int4"], strict=True)]
    return {"a": col["attn@int4"], "b": half, "columns": col}


register(
    Row(
        id="002-attention-needs-precision",
        claim="'Models seem more robust to aggressive quantization of feed-forward layers than attention layers': "
        "attention weights need higher precision.",
        origin=O,
        section="mixed-precision discussion ('4 bit or 8 bit float' for FFN weights, 'larger representations for the "
        "attention head weights')",
        experiment="`geoformer compare --preset pruning` (the levels baseline GPT, 3 x 96, 2000 iterations): symmetric "
        "per-channel round-to-nearest fake quantisation of attention (qkv + out proj, 4C^2 weights per block) or of one "
        "FFN half (c_fc or c_proj, 4C^2 each) to int4 (int8/3/2 shown); validation-loss increase on 20 x 16 x 64 tokens",
        rule=PRECISION.text() + "; the FFN side is the mean of c_fc and c_proj; paired by seed",
        measure=_measure_precision,
        decide=lambda data, level: PRECISION.decide(_paired(data["a"], data["b"], level)),
        describe=lambda data, d: (
            f"int4 dLoss: attn {fmt(data['a'], '.4f')}, FFN half {fmt(data['b'], '.4f')}; attn - FFN half "
            f"{decision_note(d, '+.4f', 'nats')}"
            + ("; int8 attn {}, FFN {}; int3 attn {}, c_fc {}, c_proj {}".format(
                *(fmt(data["columns"][k], ".4f") for k in ("attn@int8", "ffn@int8", "attn@int3", "ffn_fc@int3", "ffn_proj@int3")))
               if "columns" in data else "")
        ),  # fmt: skip
        examples={o: {"a": [0.01 + v for v in synthetic_values(PRECISION, o)], "b": [0.01] * 5} for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=PRUNING,
    )
)

PRUNE = R.Directional("negative", 0.02, "nats", NATS, effect="mean val loss over 10-90% sparsity, neurons: ablation - magnitude")


def _measure_pruning(ctx: ClaimContext, n: int) -> dict[str, Any]:
    import numpy as np

    from geoformer.circuits.studies import plot_pruning, pruning_study

    folder, seeds = _pruning_models(ctx, n)
    study = _cached(ctx, "pruning", {"seeds": seeds, "quick": ctx.quick}, lambda: pruning_study(folder, seeds))
    plot_pruning(study, ctx.out / "pruning_curves.png")
    auc = {u: {s: [float(np.mean(c)) for c in runs] for s, runs in by.items()} for u, by in study["curves"].items()}
    return {"a": auc["neuron"]["ablation"], "b": auc["neuron"]["magnitude"], "auc": auc}


register(
    Row(
        id="002-pruning-ablation-vs-magnitude",
        claim="Weight magnitude is a poor guide to what can be pruned ('Some weights might be small in magnitude but "
        "critical'); pruning by functional importance preserves the model better.",
        origin=O,
        section="'Cohomological Pruning'",
        experiment="`geoformer compare --preset pruning` (3 x 96 GPT, 2000 iterations), no fine-tuning: prune MLP neurons "
        "by ablation importance (exact loss increase when zeroed, 32 x 64 calibration tokens) or by magnitude at 10..90% "
        "sparsity; heads, single weights, Wanda and random shown (`pruning_curves.png` in the row's folder)",
        rule=PRUNE.text() + "; paired by seed",
        measure=_measure_pruning,
        decide=lambda data, level: PRUNE.decide(_paired(data["a"], data["b"], level)),
        describe=lambda data, d: (
            "mean val loss over 10-90% sparsity; " + "; ".join(
                f"{u}: " + ", ".join(f"{s} {fmt(v)}" for s, v in by.items()) for u, by in data.get("auc", {}).items())
            + f"; neurons ablation - magnitude {decision_note(d, '+.4f', 'nats')}"
        ),  # fmt: skip
        examples={o: {"a": [2.2 + v for v in synthetic_values(PRUNE, o)], "b": [2.2] * 5} for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=PRUNING,
    )
)


register_untestable(
    Untestable("002-gpt2-scale", "A GPT-2-scale model built this way 'out-performs a similarly scaled model trained using "
               "the traditional Transformer architecture'.", O, "Conclusion (the author's proposed test)",
               "GPT-2 scale is out of reach on 2 CPU cores; the small-scale versions are the level-structure rows"),
    Untestable("002-millions-of-circuits", "'there are likely millions of them in a large model'.", O,
               "'Size and Distribution'", "a statement about large models; the small model has ~150k parameters"),
    Untestable("002-distillation-iq", "Distilling to 'a MUCH smaller model' keeps most of the 'IQ' while losing exact "
               "recall.", O, "distillation prompt", "no measure of 'IQ' against recall is defined; not run here"),
    Untestable("002-cohomological-init", "'Cohomological Initialization' 'could dramatically speed up training'.", O,
               "'Cohomological Initialization'", "the initialisation is never specified"),
    Untestable("002-qlora", "'The success of techniques like QLoRA that focus on preserving attention dynamics while "
               "compressing other components'.", O, "mixed-precision discussion",
               "an explanation of published work, not a result; QLoRA quantises all base weights alike (NF4)"),
)  # fmt: skip

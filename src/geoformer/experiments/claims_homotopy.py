"""Claims of seed 004 (curvature-adaptive "homotopy" lr), tested on the shakespeare_char model.

The comparison (`geoformer compare --preset homotopy_lr`) is run once per ledger and shared by the
rows that read it. Quick mode shrinks the model and the run (2 layers x 64, 200 iterations).
"""

from __future__ import annotations

import math
import statistics

import torch

from geoformer.experiments.claims import ClaimContext, Verdict, ci_verdict, claim
from geoformer.experiments.stats import mean_std, paired_diff_ci, pearson

PRESET = "homotopy_lr"
FIXED = ["constant", "cosine", "warmup_cosine"]
QUICK_SETS = [
    ("model.n_layer", 2),
    ("model.n_embd", 64),
    ("train.max_iters", 200),
    ("train.eval_interval", 10),
    ("train.eval_iters", 5),
    ("train.homotopy.interval", 10),
]


def _results(ctx: ClaimContext, variants: list[str]) -> dict:
    return ctx.compare(PRESET, variants=variants, sets=QUICK_SETS if ctx.quick else ())


def _finals(res: dict, name: str) -> list[float]:
    return [r["summary"]["final_val_loss"] for r in res["variants"][name]["runs"]]


def _homotopy_traces(res: dict) -> list[list[dict]]:
    return [[m for m in r["metrics"] if "curvature_ema" in m] for r in res["variants"]["homotopy"]["runs"]]


@claim(
    id="004-kappa-lr-correlation",
    claim="The homotopy lr tracks curvature inversely: curvature-lr correlation -0.879.",
    source="seeds/004_*.txt, 'HNF Theory Validation'",
    experiment="`geoformer compare --preset homotopy_lr`, homotopy variant (kappa = ||H||/||g||^2 by power "
    "iteration every 25 steps on a 4-sequence probe batch); Pearson r of (kappa EMA, lr) over evaluations, per seed",
    rule="mean r <= -0.7 reproduced, > -0.3 not reproduced, else inconclusive. Note: lr is a decreasing "
    "function of the kappa EMA whenever it is above target, so a strong negative r holds by construction",
)
def kappa_lr_correlation(ctx: ClaimContext) -> Verdict:
    res = _results(ctx, ["homotopy"])
    rs, rs_raw, below = [], [], []
    for trace in _homotopy_traces(res):
        lrs = [m["lr"] for m in trace]
        rs.append(pearson([m["curvature_ema"] for m in trace], lrs))
        rs_raw.append(pearson([m["kappa"] for m in trace], lrs))
        below.append(sum(lr < max(lrs) * 0.999 for lr in lrs) / max(len(lrs), 1))
    finite = [r for r in rs if math.isfinite(r)]
    if not finite:
        return Verdict("lr never moved: correlation undefined", "inconclusive", {"r": rs})
    m, s = mean_std(finite)
    mr, _ = mean_std([r for r in rs_raw if math.isfinite(r)])
    verdict = "reproduced" if m <= -0.7 else "not reproduced" if m > -0.3 else "inconclusive"
    measured = (
        f"r(kappa EMA, lr) = {m:.3f} ± {s:.3f} over {len(finite)} seeds (raw kappa: {mr:.3f}); "
        f"lr below base at {100 * statistics.fmean(below):.0f}% of evaluations"
    )
    return Verdict(measured, verdict, {"r_ema": rs, "r_raw": rs_raw})


@claim(
    id="004-automatic-warmup",
    claim="The homotopy lr produces an automatic warmup: lr starts low where curvature is high and rises as it falls.",
    source="seeds/004_*.txt, 'Automatic Warmup'",
    experiment="homotopy variant of `geoformer compare --preset homotopy_lr`: mean lr over the first 10% of "
    "steps against the mean over 10-30%",
    rule="reproduced if early mean lr <= 0.9 x the 10-30% mean in a majority of seeds, else not reproduced",
)
def automatic_warmup(ctx: ClaimContext) -> Verdict:
    res = _results(ctx, ["homotopy"])
    ratios = []
    for run in res["variants"]["homotopy"]["runs"]:
        recs = [m for m in run["metrics"] if m["step"] > 0]
        total = recs[-1]["step"]
        early = [m["lr"] for m in recs if m["step"] <= 0.1 * total]
        later = [m["lr"] for m in recs if 0.1 * total < m["step"] <= 0.3 * total]
        if early and later:
            ratios.append(statistics.fmean(early) / statistics.fmean(later))
    if not ratios:
        return Verdict("no lr trace", "inconclusive")
    hits = sum(r <= 0.9 for r in ratios)
    verdict = "reproduced" if hits > len(ratios) / 2 else "not reproduced"
    measured = (
        f"early/later mean lr ratio {statistics.fmean(ratios):.3f} (per seed "
        f"{', '.join(f'{r:.3f}' for r in ratios)}); lr never exceeds base, and starts at base until "
        "the curvature target is calibrated"
    )
    return Verdict(measured, verdict, {"ratios": ratios})


@claim(
    id="004-homotopy-vs-fixed",
    claim="The homotopy lr is competitive with fixed schedules without tuning "
    "(seed: 2.495 vs constant's 2.472 and cosine's 2.907).",
    source="seeds/004_*.txt, transformer demo table",
    experiment="`geoformer compare --preset homotopy_lr` (3 seeds, same tokens): homotopy final val loss minus "
    "the best fixed schedule's (constant, cosine, warmup_cosine; best by mean)",
    rule="95% paired CI of (homotopy - best fixed) entirely below +0.02 nats reproduced, entirely above "
    "+0.02 not reproduced, else inconclusive",
)
def homotopy_vs_fixed(ctx: ClaimContext) -> Verdict:
    res = _results(ctx, ["homotopy", *FIXED, "schedulefree"])
    means = {n: mean_std(_finals(res, n))[0] for n in FIXED}
    best = min(means, key=means.get)
    d = paired_diff_ci(_finals(res, "homotopy"), _finals(res, best))
    shifted = ci_verdict(d["lo"] - 0.02, d["hi"] - 0.02, want="negative")
    table = ", ".join(
        f"{n} {mean_std(_finals(res, n))[0]:.3f} ± {mean_std(_finals(res, n))[1]:.3f}"
        for n in ["homotopy", *FIXED, "schedulefree"]
    )
    measured = f"{table}; homotopy - {best} = {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return Verdict(measured, shifted, {"best": best, "diff": d})


@claim(
    id="004-precision-bound",
    claim="Precision bound p >= log2(kappa D^2 / eps) says fp16/bf16 (and fp32) are insufficient for "
    "transformer training (seed: p >= 26.5 bits).",
    source="seeds/004_*.txt, 'Theorem 4.7 (Precision Obstruction)'",
    experiment="`geoformer compare --preset homotopy_lr` (shakespeare_char model, 1000 iterations, 3 seeds): "
    "bound from the homotopy run's final kappa, D = parameter-vector norm, eps = 1e-6 (the seed's); against "
    "`constant` in fp32 and under bf16 autocast (`constant_bf16`), same seeds and tokens",
    rule="if the bound says bf16 is insufficient but bf16 ends within 0.05 nats of fp32 (mean), not "
    "reproduced; if bf16 is worse by more than 0.05, reproduced; if the bound allows bf16, inconclusive",
)
def precision_bound(ctx: ClaimContext) -> Verdict:
    from geoformer.diagnostics.precision import MANTISSA_BITS, precision_bits
    from geoformer.train.trainer import load_model

    res = _results(ctx, ["homotopy", "constant", "constant_bf16"])
    run = res["variants"]["homotopy"]["runs"][0]
    kappa = [m for m in run["metrics"] if "kappa" in m][-1]["kappa"]
    model, _, _ = load_model(
        ctx.shared(PRESET + ("-quick" if ctx.quick else "")) / "runs" / "homotopy" / f"seed{run['seed']}"
    )
    diameter = torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()
    bits = precision_bits(kappa, diameter, 1e-6)
    fp32, bf16 = mean_std(_finals(res, "constant"))[0], mean_std(_finals(res, "constant_bf16"))[0]
    gap = bf16 - fp32
    if bits <= MANTISSA_BITS["bfloat16"]:
        verdict = "inconclusive"
    else:
        verdict = "not reproduced" if gap <= 0.05 else "reproduced"
    measured = (
        f"bound p >= {bits:.1f} bits (kappa {kappa:.2f}, D {diameter:.1f}, eps 1e-6) vs bf16's "
        f"{MANTISSA_BITS['bfloat16']}; trained: fp32 {fp32:.3f}, bf16 {bf16:.3f} (gap {gap:+.3f})"
    )
    return Verdict(measured, verdict, {"bits": bits, "kappa": kappa, "diameter": diameter, "gap": gap})


@claim(
    id="004-probe-overhead",
    claim="Estimating curvature every 10 steps costs 1-2% of training time; one Hutchinson estimate costs "
    "20-50% of a step.",
    source="seeds/004_*.txt, overhead figures",
    experiment="`geoformer bench homotopy --preset shakespeare_char` (quick: --preset quick, 60 steps): time of "
    "training steps with probes every 10 steps (1 power iteration + 1 Rademacher probe on a 4-sequence batch) "
    "against constant lr in the same run, alternating rounds, medians",
    rule="reproduced if the interval-10 overhead is <= 2% and one estimate costs <= 0.5 steps; not "
    "reproduced otherwise",
)
def probe_overhead(ctx: ClaimContext) -> Verdict:
    from geoformer import config as C
    from geoformer.bench.homotopy import run_homotopy_bench, write_outputs

    cfg = C.build_config(C.load_raw(preset="quick" if ctx.quick else "shakespeare_char"))
    res = run_homotopy_bench(
        cfg,
        steps=60 if ctx.quick else 200,
        warmup=10 if ctx.quick else 20,
        repeats=1 if ctx.quick else 3,
        log=lambda m: None,
    )
    write_outputs(res, ctx.out)
    rows = {r["setting"]: r for r in res["rows"]}
    one = rows["homotopy interval 10, 1 probe"]
    default = rows["homotopy default"]
    ok = one["overhead_pct"] <= 2.0 and (one["estimate_cost_steps"] or 0) <= 0.5
    measured = (
        f"interval 10, 1 probe: {one['overhead_pct']:+.1f}% (one estimate = "
        f"{one['estimate_cost_steps']:.2f} steps); default settings (interval 200, 3 power iterations, 1 probe): "
        f"{default['overhead_pct']:+.1f}%; seed estimator at interval 10: "
        f"{rows['homotopy interval 10, seed estimator (20 power its, 10 probes)']['overhead_pct']:+.1f}%"
    )
    return Verdict(measured, "reproduced" if ok else "not reproduced", {"rows": res["rows"]})


@claim(
    id="004-stress-stability",
    claim="On an ill-conditioned transformer (low attention temperature) the homotopy lr keeps training stable "
    "(seed: all methods stable; constant 0.276, cosine 0.351, homotopy 0.287).",
    source="seeds/004_*.txt, stability table",
    experiment="`geoformer compare --preset homotopy_stress` (shakespeare_char model with attention temperature "
    "0.3, init std 0.03, lr 3e-3, 1000 iterations, 3 seeds): divergences and final val loss of constant, "
    "warmup_cosine and homotopy (interval 25)",
    rule="reproduced if no homotopy seed diverges and the 95% paired CI of (homotopy - constant) is not "
    "entirely above 0; not reproduced otherwise",
)
def stress_stability(ctx: ClaimContext) -> Verdict:
    res = ctx.compare("homotopy_stress", sets=QUICK_SETS if ctx.quick else ())
    finals = {n: _finals(res, n) for n in res["variants"]}
    diverged = {n: sum(not math.isfinite(x) for x in f) for n, f in finals.items()}
    d = paired_diff_ci(finals["homotopy"], finals["constant"])
    ok = diverged["homotopy"] == 0 and not (math.isfinite(d["lo"]) and d["lo"] > 0)
    table = ", ".join(
        f"{n} {mean_std(f)[0]:.3f} ± {mean_std(f)[1]:.3f} ({diverged[n]} diverged)" for n, f in finals.items()
    )
    measured = f"{table}; homotopy - constant = {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return Verdict(measured, "reproduced" if ok else "not reproduced", {"finals": finals, "diff": d})

"""Claims of seed 002 about circuits: protection at high learning rates, canary rollback, bridges.

All three rows run on the capability suites of :mod:`geoformer.circuits.canaries` with the small GPT of
:mod:`geoformer.circuits.continual` (CPU, one thread). The two continual-learning rows share one run.
"""

from __future__ import annotations

from geoformer.experiments.claims import ClaimContext, Verdict, ci_verdict, claim
from geoformer.experiments.stats import mean_std, paired_diff_ci

_HIGH = 10.0  # the high-lr multiplier of phase B
# Models trained on all five suites (40+ minutes each on the shared 2-core machine). Seed 0 did not learn
# modus ponens within its step budget (docs/CIRCUITS.md); the row uses the converged seed-1 model.
_BRIDGE_SEEDS = [1]


def _continual(ctx: ClaimContext) -> dict:
    from geoformer.circuits.continual import run_continual

    out = ctx.shared("circuits_continual" + ("-quick" if ctx.quick else ""))
    kw = {"seeds": 3, "quick": ctx.quick, "quiet": ctx.quiet, "resume": True}
    run_continual(out, lr_mults=(1.0,), **kw)  # all methods at the base phase-B lr
    return run_continual(out, lr_mults=(_HIGH,), methods=("naive", "protect", "canary"), **kw)


def _by(rows, method, lr, key):
    return {r["seed"]: r[key] for r in rows if r["method"] == method and r["lr_b"] == lr}


def _pair(rows, key, m1, m2, lr):
    a, b = _by(rows, m1, lr, key), _by(rows, m2, lr, key)
    seeds = sorted(set(a) & set(b))
    return (
        paired_diff_ci([a[s] for s in seeds], [b[s] for s in seeds]),
        [a[s] for s in seeds],
        [b[s] for s in seeds],
    )


@claim(
    id="002-protection-high-lr",
    claim="Protecting the parameters of identified circuits (update scale 0.01x, graduated zones) lets "
    "training take much larger steps (high learning rates) without damaging the protected capabilities.",
    source="seeds/002_*.txt, 'protected circuit training' (circuit mask, 0.01x LR for circuit parameters)",
    experiment="`geoformer circuits continual --seeds 3 --lr-mults 10 --methods naive,protect,canary`: GPT "
    "3x4x64 trained on suites A "
    "(modus ponens, contrapositive, control), then on suites B (transitivity, copy) at 10x the phase-B lr "
    "(1e-2) with plain AdamW vs with zone scales from |theta * grad| on A (top 2% 0.01x, next 8% 0.1x, "
    "next 20% 0.5x); damage = drop of mean A test exact-match",
    rule="95% paired t-interval over seeds of damage(naive, 10x) - damage(protect, 10x): reproduced if "
    "entirely > 0 and protected mean damage < 5 points; not reproduced if entirely <= 0 or protected "
    "damage >= 20 points; else inconclusive",
)
def protection_high_lr(ctx: ClaimContext) -> Verdict:
    rows = _continual(ctx)["rows"]
    lr = max(r["lr_b"] for r in rows)
    d, naive, prot = _pair(rows, "forgetting", "naive", "protect", lr)
    (mn, sn), (mp, sp) = mean_std(naive), mean_std(prot)
    bn, bp = (
        mean_std(list(_by(rows, "naive", lr, "b_after").values())),
        mean_std(list(_by(rows, "protect", lr, "b_after").values())),
    )
    verdict = ci_verdict(d["lo"], d["hi"], want="positive")
    if verdict == "reproduced" and mp >= 0.05:
        verdict = "inconclusive"
    if mp >= 0.20:
        verdict = "not reproduced"
    measured = (
        f"at lr {lr:g}: A damage naive {100 * mn:.1f} ± {100 * sn:.1f} pts, protected {100 * mp:.1f} ± "
        f"{100 * sp:.1f} pts; difference {100 * d['mean']:+.1f} [95% CI {100 * d['lo']:+.1f}, "
        f"{100 * d['hi']:+.1f}], n={d['n']}; B acc naive {100 * bn[0]:.1f}%, protected {100 * bp[0]:.1f}%"
    )
    return Verdict(measured=measured, verdict=verdict, details={"naive": naive, "protect": prot})


@claim(
    id="002-canary-rollback",
    claim="A canary monitor that re-runs capability suites during training, rolls back any update that "
    "breaks one and adds the responsible parameters to the protection mask keeps the capabilities intact.",
    source="seeds/002_*.txt, 'canaries in the coal mine' (CircuitMonitor, smart rollback)",
    experiment="`geoformer circuits continual --seeds 3 --lr-mults 1` and `--lr-mults 10`, method `canary`: "
    "protection as in "
    "002-protection-high-lr plus a CanaryMonitor every 25 steps on 200 train-split examples per A suite, "
    "tolerance 2 points, rollback to the last accepted snapshot, mask grown by the 0.5% most-moved "
    "elements; forgetting = drop of mean A test exact-match, at 1x and 10x phase-B lr",
    rule="95% paired t-interval over seeds of forgetting(naive) - forgetting(canary) at each lr: "
    "reproduced if entirely > 0 at both lrs and canary forgetting < 5 points at both; not reproduced if "
    "entirely <= 0 at either lr or canary forgetting >= 20 points; else inconclusive",
)
def canary_rollback(ctx: ClaimContext) -> Verdict:
    rows = _continual(ctx)["rows"]
    parts, verdicts, details = [], [], {}
    for lr in sorted({r["lr_b"] for r in rows}):
        d, naive, can = _pair(rows, "forgetting", "naive", "canary", lr)
        (mn, _), (mc, sc) = mean_std(naive), mean_std(can)
        b = mean_std(list(_by(rows, "canary", lr, "b_after").values()))[0]
        v = ci_verdict(d["lo"], d["hi"], want="positive")
        if v == "reproduced" and mc >= 0.05:
            v = "inconclusive"
        if mc >= 0.20:
            v = "not reproduced"
        verdicts.append(v)
        details[str(lr)] = {"naive": naive, "canary": can, "diff": d}
        parts.append(
            f"lr {lr:g}: forgetting naive {100 * mn:.1f}, canary {100 * mc:.1f} ± {100 * sc:.1f} pts "
            f"(diff {100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]), canary B acc {100 * b:.1f}%"
        )
    if "not reproduced" in verdicts:
        verdict = "not reproduced"
    elif all(v == "reproduced" for v in verdicts):
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    return Verdict(
        measured="; ".join(parts) + f"; n={len({r['seed'] for r in rows})}", verdict=verdict, details=details
    )


@claim(
    id="002-bridges",
    claim="Some components ('bridges') are critical to many capabilities at once, and they matter more "
    "than their weight magnitude suggests.",
    source="seeds/002_*.txt, 'critical bridge areas' (heads where many exact sequences pass through)",
    experiment="`geoformer circuits attribute --seed-ids 1` (one converged model: compute-limited): GPT "
    "3x4x64 trained on all five suites (>= 95% "
    "test exact-match); each head mean-ablated alone; bridge score = number of suites whose accuracy drops "
    "by > 10 points; Spearman rank correlation over the 12 heads between head weight norm and summed "
    "accuracy drop",
    rule="per model: a bridge exists if a head has bridge score >= 2, and magnitude under-predicts "
    "importance if Spearman(norm, summed drop) < 0.5; reproduced if both hold in every seed, not "
    "reproduced if in every seed at least one fails, else inconclusive",
)
def bridges(ctx: ClaimContext) -> Verdict:
    from geoformer.circuits.continual import run_attribute

    models = ctx.shared("circuits_models" + ("-quick" if ctx.quick else ""))  # trained once per ledger
    runs = run_attribute(
        ctx.out,
        seed_ids=_BRIDGE_SEEDS,
        quick=ctx.quick,
        quiet=ctx.quiet,
        force=True,
        neurons=False,
        models=models,
    )
    br = [r["bridges"] for r in runs.values()]
    rho = [b["spearman_norm_vs_summed_drop"] for b in br]
    has = [b["max_bridge_score"] >= 2 for b in br]
    weak = [r < 0.5 for r in rho]
    if all(has) and all(weak):
        verdict = "reproduced"
    elif not any(h and w for h, w in zip(has, weak, strict=True)):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    m, s = mean_std(rho)
    db, dn = (
        mean_std([b["mean_drop_top_bridge"] for b in br]),
        mean_std([b["mean_drop_top_norm"] for b in br]),
    )
    acc = min(min(r["train"]["test_acc"].values()) for r in runs.values())
    measured = (
        f"bridge heads (score >= 2) per seed {[b['n_bridges'] for b in br]}, max score "
        f"{[b['max_bridge_score'] for b in br]}; Spearman(norm, summed drop) per seed "
        f"{[round(r, 2) for r in rho]} (mean {m:.2f} ± {s:.2f}); ablating the top-2 bridge heads drops mean "
        f"accuracy {100 * db[0]:.1f} ± {100 * db[1]:.1f} pts vs top-2 norm heads {100 * dn[0]:.1f} ± "
        f"{100 * dn[1]:.1f} pts; min test acc of the models {100 * acc:.1f}%; n={len(br)}"
    )
    return Verdict(measured=measured, verdict=verdict, details={"bridges": br})

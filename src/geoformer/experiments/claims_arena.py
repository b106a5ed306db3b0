"""Claims the arena itself can test (schedules on a small character-level transformer)."""

from __future__ import annotations

from geoformer.experiments.claims import ClaimContext, Verdict, ci_verdict, claim
from geoformer.experiments.stats import mean_std, paired_diff_ci


@claim(
    id="004-constant-beats-cosine",
    claim="On a small character-level transformer LM, constant lr beats cosine annealing "
    "(final loss 2.472 vs 2.907).",
    source="seeds/004_*.txt, transformer demo table",
    experiment="`geoformer compare --preset schedules --variants constant,cosine` (Shakespeare, char-level, "
    "4x128 GPT; full: 2000 iters x 3 seeds; quick: 300 iters x 3 seeds); final validation loss",
    rule="95% paired t-interval over seeds of (constant - cosine): entirely < 0 reproduced, "
    "entirely > 0 not reproduced, else inconclusive",
)
def constant_beats_cosine(ctx: ClaimContext) -> Verdict:
    from geoformer.experiments.compare import run_compare

    sets = [("train.max_iters", 300), ("train.eval_interval", 100)] if ctx.quick else []
    res = run_compare(
        preset="schedules",
        config=None,
        sets=None,
        data=None,
        variants=["constant", "cosine"],
        seeds=3,
        out=ctx.out,
        force=True,
        quiet=ctx.quiet,
        extra_sets=sets,
    )
    finals = {
        name: [r["summary"]["final_val_loss"] for r in v["runs"]] for name, v in res["variants"].items()
    }
    d = paired_diff_ci(finals["constant"], finals["cosine"])
    (mc, sc), (mk, sk) = mean_std(finals["constant"]), mean_std(finals["cosine"])
    measured = (
        f"val loss constant {mc:.3f} ± {sc:.3f}, cosine {mk:.3f} ± {sk:.3f}; "
        f"difference {d['mean']:+.3f} [95% CI {d['lo']:+.3f}, {d['hi']:+.3f}], n={d['n']}"
    )
    return Verdict(measured=measured, verdict=ci_verdict(d["lo"], d["hi"], want="negative"), details=finals)

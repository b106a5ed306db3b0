"""The arena's own claim: the baseline every architecture row is measured against is nanoGPT's, reproduced."""

from __future__ import annotations

from geoformer.claims import rules as R
from geoformer.claims.common import decision_note, fmt, synthetic_values
from geoformer.claims.context import ClaimContext, finals
from geoformer.claims.registry import TRAINING, Row, register

PARITY = R.Equivalence(
    1.88, 0.05, "nats",
    "nanoGPT reports one run with a 20-batch validation estimate (its noise alone is about 0.02); a recipe mismatch "
    "that matters would move the loss by more than 0.05",
    quantity="mean final validation loss of the shakespeare_char recipe",
)  # fmt: skip


def _measure(ctx: ClaimContext, n: int) -> dict:
    res = ctx.compare("schedules", variants=["warmup_cosine"], seeds=n,
                      sets=[("train.max_iters", 300), ("train.eval_interval", 100)] if ctx.quick else [])  # fmt: skip
    f = finals(res)["warmup_cosine"]
    seeds = sorted(f)
    return {"seeds": seeds, "val_loss": [f[s] for s in seeds]}


register(
    Row(
        id="arena-nanogpt-parity",
        claim="nanoGPT's CPU baby GPT on shakespeare_char (4 layers, 4 heads, width 128, block 64, batch 12, 2000 "
        "iterations, dropout 0) 'gets us a loss of only 1.88'.",
        origin="arena",
        section="'I only have a macbook' (quick start)",
        experiment="`geoformer compare --preset schedules`, baseline variant warmup_cosine = nanoGPT's recipe (lr 1e-3 "
        "warmup 100 then cosine to 1e-4 over 2000 iterations, AdamW betas 0.9/0.99, weight decay 0.1, clip 1.0); "
        "validation loss on the last 10% of the characters (nanoGPT's split), 20 batches",
        rule=PARITY.text(),
        measure=_measure,
        decide=lambda data, level: PARITY.decide(R.t_interval(R.worst_as_inf(data["val_loss"], "high"), level)),
        describe=lambda data, d: f"val loss {fmt(data['val_loss'])}; mean {decision_note(d, '.3f')}",
        examples={o: {"val_loss": synthetic_values(PARITY, o)} for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=(*TRAINING, "configs/schedules.toml"),
    )
)


MODERN = R.Directional(
    "negative", 0.02, "nats", "0.02 nats: the seed-to-seed spread of this model's loss, 1% of it",
    effect="val loss(modern recipe) - val loss(nanoGPT recipe)",
)  # fmt: skip


def _measure_modern(ctx: ClaimContext, n: int) -> dict:
    res = ctx.compare("schedules", variants=["warmup_cosine", "modern_recipe"], seeds=n,
                      sets=[("train.max_iters", 300), ("train.eval_interval", 100)] if ctx.quick else [])  # fmt: skip
    f = finals(res)
    seeds = sorted(f["warmup_cosine"])
    return {"seeds": seeds, "a": [f["modern_recipe"].get(s, float("nan")) for s in seeds],
            "b": [f["warmup_cosine"][s] for s in seeds]}  # fmt: skip


register(
    Row(
        id="arena-modern-recipe",
        claim="The speedrun's small-scale changes (rotary embeddings, QK-norm, ReLU^2, zero-initialised projections, "
        "Muon for hidden matrices) make a small GPT train faster: its record went from 31.4 to 15.2 minutes with them.",
        origin="modded",
        section="record history (the changes listed there between the llm.c baseline and the Muon records)",
        experiment="`geoformer compare --preset schedules`: modern_recipe (configs/shakespeare_char_modern.toml: also "
        "RMSNorm and no biases; lr 2e-3 and warmup 100 from a 6-run sweep on the validation split, docs/ARENA.md) "
        "against warmup_cosine, nanoGPT's recipe, at the same 2000 iterations x 12 x 64 tokens; 'faster' read as a "
        "lower loss at an equal token budget",
        rule=MODERN.text() + "; paired by seed; a diverged run counts as the worst loss",
        measure=_measure_modern,
        decide=lambda data, level: MODERN.decide(R.t_interval(R.paired_differences(
            dict(enumerate(R.worst_as_inf(data["a"], "high"))), dict(enumerate(R.worst_as_inf(data["b"], "high")))), level)),
        describe=lambda data, d: (f"val loss modern {fmt(data['a'])}, nanoGPT recipe {fmt(data['b'])}; modern - "
                                  f"nanoGPT {decision_note(d, '+.4f', 'nats')}"),  # fmt: skip
        examples={o: {"a": [1.9 + v for v in synthetic_values(MODERN, o)], "b": [1.9] * 5} for o in R.OUTCOMES},
        looks=R.Looks(),
        depends=(*TRAINING, "configs/schedules.toml", "src/geoformer/train/optimizers.py"),
    )
)

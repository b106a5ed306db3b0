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

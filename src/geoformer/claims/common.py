"""Building blocks the per-write-up modules share: paired comparison rows, formatting, synthetic examples."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from geoformer.claims import rules as R
from geoformer.claims.context import ClaimContext, finals
from geoformer.claims.registry import Row, register
from geoformer.experiments.stats import mean_std


# ------------------------------------------------------------------------------------------ formatting
def fmt(xs: Sequence[float], spec: str = ".3f") -> str:
    """``mean ± std`` of the finite values, with the count of non-finite ones."""
    vals = [x for x in xs if x is not None]
    bad = sum(not math.isfinite(x) for x in vals)
    m, s = mean_std([x for x in vals if math.isfinite(x)])
    core = f"{m:{spec}} ± {s:{spec.lstrip('+')}}" if math.isfinite(m) else "n/a"
    return core + (f" ({bad} diverged/missing)" if bad else "")


def decision_note(d: R.Decision, spec: str = "+.3g", units: str = "") -> str:
    """The interval (and, when inconclusive, what this n could have detected)."""
    if d.interval is None:
        return d.reason
    txt = d.interval.text(spec, units)
    if d.outcome == R.INCONCLUSIVE and d.detectable is not None:
        txt += f"; could detect |effect| > {d.detectable:.2g}{f' {units}' if units else ''}"
    return txt


def aligned(by_seed: dict[int, float], seeds: Sequence[int]) -> list[float]:
    return [by_seed.get(s, math.nan) for s in seeds]


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Run with ``n`` intra-op threads (default: every core), then restore: timing rows state their thread count
    and must not inherit the one-thread setting a training row left behind."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n or os.cpu_count() or 1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ synthetic data
def synthetic_values(rule: Any, outcome: str, n: int = 5) -> list[float]:
    """Per-seed values whose interval drives ``rule`` (Directional / Bound / Equivalence) to ``outcome``."""
    jitter = [0.0, 0.01, -0.01, 0.02, -0.02, 0.015, -0.015, 0.005, -0.005, 0.0][:n]
    if isinstance(rule, R.Directional):
        s = -1.0 if rule.side == "negative" else 1.0
        d = rule.delta
        if rule.size is not None:
            centre = (rule.size[0] + rule.size[1]) / 2
            base = {R.REPRODUCED: centre, R.NOT_REPRODUCED: 0.0, R.INCONCLUSIVE: s * d}[outcome]
        else:
            base = {R.REPRODUCED: s * 3 * d, R.NOT_REPRODUCED: 0.0, R.INCONCLUSIVE: s * d}[outcome]
        spread = 100 * d if outcome == R.INCONCLUSIVE else 0.1 * d
        return [base + spread * j * 10 for j in jitter]
    if isinstance(rule, R.Bound):
        b, sgn = rule.bound, (-1.0 if rule.side == "below" else 1.0)
        scale = max(abs(b), 1.0)
        base = {R.REPRODUCED: b + sgn * scale, R.NOT_REPRODUCED: b - sgn * scale, R.INCONCLUSIVE: b}[outcome]
        spread = 100 * scale if outcome == R.INCONCLUSIVE else 0.01 * scale
        return [base + spread * j for j in jitter]
    if isinstance(rule, R.Equivalence):
        v, t = rule.value, rule.tol
        base = {R.REPRODUCED: v, R.NOT_REPRODUCED: v + 10 * t, R.INCONCLUSIVE: v + t}[outcome]
        spread = 100 * t if outcome == R.INCONCLUSIVE else 0.01 * t
        return [base + spread * j for j in jitter]
    raise TypeError(f"no synthetic values for {type(rule).__name__}")


def synthetic_pairs(rule: Any, outcome: str, n: int = 5, reference: float = 2.0) -> dict[str, Any]:
    """``{"seeds", "a", "b"}`` with a - b = :func:`synthetic_values`."""
    diffs = synthetic_values(rule, outcome, n)
    return {"seeds": list(range(n)), "a": [reference + d for d in diffs], "b": [reference] * n}


# ------------------------------------------------------------------------------------------ paired rows
def paired_decide(rule, worst: str = "high") -> Callable[[dict[str, Any], float], R.Decision]:
    """decide(data, level) for ``{"a", "b"}`` per seed: the rule on the interval of a - b (a missing or
    diverged run counts as the metric's worst value)."""

    def decide(data: dict[str, Any], level: float) -> R.Decision:
        a, b = R.worst_as_inf(data["a"], worst), R.worst_as_inf(data["b"], worst)
        return rule.decide(R.t_interval(R.paired_differences(dict(enumerate(a)), dict(enumerate(b))), level))

    return decide


def compare_row(
    *,
    id: str,
    claim: str,
    origin: str,
    section: str,
    experiment: str,
    preset: str,
    variant: str,
    reference: str,
    rule: Any,
    depends: tuple[str, ...],
    metric: str = "final_val_loss",
    worst: str = "high",
    context: Sequence[str] = (),
    sets: Callable[[ClaimContext], Sequence[tuple[str, Any]]] = lambda ctx: (),
    key: str = "",
    units_spec: str = ".3f",
    note: str = "",
) -> Row:
    """A row comparing ``metric`` of ``variant`` with ``reference`` over paired seeds of a preset's comparison
    (``context`` variants are trained too and shown); registered and returned."""

    def measure(ctx: ClaimContext, n: int) -> dict[str, Any]:
        res = ctx.compare(preset, variants=[variant, reference, *context], seeds=n, sets=sets(ctx), key=key)
        f = finals(res, metric)
        seeds = sorted(set(f[variant]) | set(f[reference]))
        return {
            "seeds": seeds,
            "a": aligned(f[variant], seeds),
            "b": aligned(f[reference], seeds),
            "context": {c: aligned(f[c], seeds) for c in context if c in f},
        }

    def describe(data: dict[str, Any], d: R.Decision) -> str:
        parts = [f"{variant} {fmt(data['a'], units_spec)}", f"{reference} {fmt(data['b'], units_spec)}"]
        parts += [f"{c} {fmt(v, units_spec)}" for c, v in data.get("context", {}).items()]
        u = getattr(rule, "units", "")
        return f"{metric}: " + ", ".join(parts) + f"; {variant} - {reference} = {decision_note(d, '+.4f', u)}" + (
            f"; {note}" if note else ""
        )

    return register(
        Row(
            id=id,
            claim=claim,
            origin=origin,
            section=section,
            experiment=experiment,
            rule=f"{rule.text()}; effect = {metric} of {variant} minus {reference}, paired by seed; a diverged run "
            f"counts as the worst {metric}",
            measure=measure,
            decide=paired_decide(rule, worst),
            describe=describe,
            examples={o: {**synthetic_pairs(rule, o), "context": {}} for o in R.OUTCOMES},
            looks=R.Looks(),
            depends=depends,
        )
    )

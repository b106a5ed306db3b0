"""The ledger's verdict machinery, written once: every row's outcome comes from these pure functions.

A row's claim takes one of four forms, each a small frozen dataclass with ``decide(interval)`` and
``text()`` (the rule text printed in the ledger is built from the same object the code decides with):

- :class:`Directional` -- "the effect (variant minus reference) lies on one side of zero", with a smallest
  effect of interest ``delta`` stated before the row runs (and optionally a claimed size).
  *reproduced*: the interval lies entirely on the claimed side of zero (and, if the claim names a size,
  overlaps it); *not reproduced*: the interval lies inside (-delta, +delta) (no effect of a size that
  matters, even if it excludes zero), lies entirely on the other side, or lies on the claimed side but
  misses the claimed size; *inconclusive*: anything else.
- :class:`Bound` -- "the quantity is below (above) b": *reproduced* if the whole interval is below b,
  *not reproduced* if the whole interval is at or above b, else *inconclusive*.
- :class:`Equivalence` -- "the quantity equals v (within tol)": *reproduced* if the interval lies inside
  (v - tol, v + tol), *not reproduced* if it lies entirely outside it, else *inconclusive*.
- :class:`ZeroRate` -- "the rate is 0" for k successes in n trials (Wilson interval): *reproduced* if
  k = 0 and the upper bound is below ``resolution``, *not reproduced* if k > 0 (the lower bound is then
  above 0), else *inconclusive* (too few trials to tell 0 from ``resolution``).

Intervals come from per-seed values (:func:`t_interval`, :func:`paired_interval`): a two-sided Student-t
interval at the level of the look (:class:`Looks`: seeds are added at n = 3, 5, 10 while a row is
inconclusive, and each look uses level 1 - alpha / (number of looks): Bonferroni over the looks, so the
whole sequential procedure errs with probability at most alpha). Non-finite values are never dropped:
a diverged run counts as the worst value of its metric (+inf for a loss), an infinite value stretches the
interval to infinity on its side, and a pair where both runs diverged (or a value is missing) is counted
as ``undefined`` and shown. A deterministic measurement is a degenerate interval ``[v, v]``.

Compound rows join sub-decisions with :func:`combine` (all reproduced -> reproduced; any not reproduced
-> not reproduced; else inconclusive).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from geoformer.experiments.stats import t_quantile

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


# ------------------------------------------------------------------------------------------ looks
@dataclass(frozen=True)
class Looks:
    """Seeds are added at these sample sizes while a row is inconclusive; every look's interval is at
    level ``1 - alpha / len(at)`` (Bonferroni over the planned looks)."""

    at: tuple[int, ...] = (3, 5, 10)
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.at or any(b <= a for a, b in zip(self.at, self.at[1:], strict=False)) or self.at[0] < 1:
            raise ValueError(f"looks must be increasing positive sample sizes, got {self.at}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    @property
    def level(self) -> float:
        return 1.0 - self.alpha / len(self.at)

    def capped(self, max_n: int | None) -> Looks:
        """The looks up to ``max_n`` (a configurable maximum; the level is corrected for the looks kept)."""
        if max_n is None:
            return self
        kept = tuple(n for n in self.at if n <= max_n) or (min(self.at[0], max_n),)
        return Looks(kept, self.alpha)

    def text(self) -> str:
        looks = ", ".join(str(n) for n in self.at)
        if len(self.at) == 1:
            return f"n = {looks} seeds, {100 * self.level:.3g}% t-interval"
        return (
            f"seeds added at looks n = {looks} while inconclusive; each look's interval is a "
            f"{100 * self.level:.3g}% t-interval (Bonferroni: alpha {self.alpha:g} split over {len(self.at)} looks)"
        )


SINGLE = Looks((1,))  # rows measured once (deterministic, or no seeds); level 95%


# ------------------------------------------------------------------------------------------ intervals
@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided interval, and how many values were non-finite."""

    estimate: float
    lo: float
    hi: float
    level: float
    n: int  # finite values used for the t part
    n_inf_low: int = 0  # values at -inf (stretch lo to -inf)
    n_inf_high: int = 0  # values at +inf (stretch hi to +inf)
    undefined: int = 0  # NaN values (both runs of a pair diverged, or a measurement is missing)

    @property
    def n_total(self) -> int:
        return self.n + self.n_inf_low + self.n_inf_high + self.undefined

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2 if self.defined else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_total": self.n_total}

    def text(self, spec: str = "+.3g", units: str = "") -> str:
        u = f" {units}" if units else ""
        pct = f"{100 * self.level:.3g}%"
        core = f"{self.estimate:{spec}}{u} [{pct} CI {self.lo:{spec}}, {self.hi:{spec}}], n={self.n_total}"
        extra = []
        if self.n_inf_low or self.n_inf_high:
            extra.append(f"{self.n_inf_low + self.n_inf_high} non-finite counted as unbounded")
        if self.undefined:
            extra.append(f"{self.undefined} undefined")
        return core + (f" ({'; '.join(extra)})" if extra else "")


def point(value: float) -> Interval:
    """A deterministic measurement as a degenerate interval (NaN: the measurement failed)."""
    v = float(value) if value is not None else math.nan
    if math.isnan(v):
        return Interval(math.nan, math.nan, math.nan, 1.0, 0, undefined=1)
    return Interval(v, v, v, 1.0, 1)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` at ``level``, with non-finite values counted:
    +inf / -inf stretch the interval to infinity on their side (never dropped); NaN counts as undefined.
    With fewer than 2 finite values the finite part gives no interval: (-inf, +inf) unless every value
    is infinite on one side (then the interval is that infinity)."""
    arr = np.asarray([math.nan if v is None else v for v in values], dtype=float)
    fin = arr[np.isfinite(arr)]
    lo_inf, hi_inf = int(np.sum(arr == -np.inf)), int(np.sum(arr == np.inf))
    und = int(np.sum(np.isnan(arr)))
    n = int(fin.size)
    if n == 0 and (lo_inf or hi_inf):
        lo = -math.inf if lo_inf else math.inf
        hi = math.inf if hi_inf else -math.inf
        est = lo if lo == hi else math.nan
        return Interval(est, lo, hi, level, 0, lo_inf, hi_inf, und)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, level, 0, 0, 0, und)
    est = float(fin.mean())
    if n < 2:
        lo, hi = -math.inf, math.inf
    else:
        half = t_quantile(n - 1, level) * float(fin.std(ddof=1)) / math.sqrt(n)
        lo, hi = est - half, est + half
    if lo_inf:
        lo = -math.inf
    if hi_inf:
        hi = math.inf
    return Interval(est, lo, hi, level, n, lo_inf, hi_inf, und)


def worst_as_inf(values: Sequence[float], worst: str) -> list[float]:
    """Per-seed metric values with a missing / diverged run (NaN) replaced by the metric's worst value:
    ``worst="high"`` (losses: +inf) or ``"low"`` (accuracies: -inf)."""
    bad = math.inf if worst == "high" else -math.inf
    return [bad if (v is None or math.isnan(v)) else float(v) for v in values]


def paired_differences(a: Mapping[Any, float], b: Mapping[Any, float]) -> list[float]:
    """``a[s] - b[s]`` for every seed ``s`` of either side (a seed missing on one side is NaN); inf - inf
    (both diverged) is NaN: undefined, counted."""
    out = []
    for s in sorted(set(a) | set(b), key=str):
        x, y = a.get(s, math.nan), b.get(s, math.nan)
        with np.errstate(invalid="ignore"):
            out.append(float(np.float64(x) - np.float64(y)))
    return out


def paired_interval(a: Mapping[Any, float], b: Mapping[Any, float], level: float) -> Interval:
    """Interval of the mean paired difference a - b over seeds (see :func:`paired_differences`)."""
    return t_interval(paired_differences(a, b), level)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    if n <= 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: the formula cancels to rounding error there
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


# ------------------------------------------------------------------------------------------ decisions
@dataclass
class Decision:
    """A rule's outcome, the branch that fired (``reason``), and the numbers it was decided on."""

    outcome: str
    reason: str
    interval: Interval | None = None
    parts: dict[str, Decision] = field(default_factory=dict)
    detectable: float | None = None  # when inconclusive: the interval half-width (50% power)
    spec: dict[str, Any] = field(default_factory=dict)  # the rule that decided (form, side, delta, units, ...)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "interval": self.interval.to_dict() if self.interval else None,
            "detectable": self.detectable,
            "spec": self.spec,
            "parts": {k: v.to_dict() for k, v in self.parts.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        iv = d.get("interval")
        return cls(
            outcome=d["outcome"],
            reason=d.get("reason", ""),
            interval=Interval(**{k: v for k, v in iv.items() if k != "n_total"}) if iv else None,
            parts={k: cls.from_dict(v) for k, v in (d.get("parts") or {}).items()},
            detectable=d.get("detectable"),
            spec=d.get("spec") or {},
        )


def _spec(rule: Any) -> dict[str, Any]:
    return {"form": type(rule).__name__.lower(), **asdict(rule)}


def _with_spec(decision: Decision, rule: Any) -> Decision:
    decision.spec = _spec(rule)
    return decision


def _inconclusive(reason: str, iv: Interval | None) -> Decision:
    hw = iv.half_width if iv is not None and iv.defined else None
    return Decision(INCONCLUSIVE, reason, iv, detectable=hw if hw is not None and math.isfinite(hw) else None)


class _Rule:
    """Rules record themselves in the decision they return (the forest plot and the ledger read it)."""

    def decide(self, iv: Interval) -> Decision:
        return _with_spec(self._decide(iv), self)


@dataclass(frozen=True)
class Directional(_Rule):
    """The claim: the effect lies on ``side`` ("negative" or "positive") of zero, by at least ``delta``."""

    side: str
    delta: float  # smallest effect of interest, in ``units``
    units: str
    why: str  # why this delta, stated before the row runs
    effect: str = "variant - reference"  # what the effect is
    size: tuple[float, float] | None = None  # a claimed size range (effect units), if comparable here

    def __post_init__(self) -> None:
        if self.side not in ("negative", "positive"):
            raise ValueError(f"side must be 'negative' or 'positive', got {self.side!r}")
        if not (self.delta > 0 and math.isfinite(self.delta)):
            raise ValueError(f"delta must be a positive number, got {self.delta!r}")
        if self.size is not None and not self.size[0] <= self.size[1]:
            raise ValueError(f"size must be (low, high), got {self.size!r}")

    def _decide(self, iv: Interval) -> Decision:
        if not iv.defined:
            return _inconclusive("no interval (too few finite values)", iv)
        s = -1.0 if self.side == "negative" else 1.0
        lo, hi = sorted((s * iv.lo, s * iv.hi))  # in the claimed direction: > 0 supports the claim
        if -self.delta < lo and hi < self.delta:
            return Decision(NOT_REPRODUCED, f"interval inside (-{self.delta:g}, +{self.delta:g}): no effect of a size that matters", iv)
        if hi < 0:
            return Decision(NOT_REPRODUCED, "interval entirely on the other side of zero", iv)
        if lo > 0:
            if self.size is not None and not (iv.lo <= self.size[1] and iv.hi >= self.size[0]):
                return Decision(NOT_REPRODUCED, f"on the claimed side, but the claimed size [{self.size[0]:g}, {self.size[1]:g}] lies outside the interval", iv)
            return Decision(REPRODUCED, "interval entirely on the claimed side of zero" + (" and overlapping the claimed size" if self.size else ""), iv)
        return _inconclusive("interval overlaps zero and reaches beyond the delta band", iv)

    def text(self) -> str:
        sign = "< 0" if self.side == "negative" else "> 0"
        size = f" and overlaps the claimed size [{self.size[0]:g}, {self.size[1]:g}] {self.units}" if self.size else ""
        miss = "; or on the claimed side but missing the claimed size" if self.size else ""
        return (
            f"claim: {self.effect} {sign}; smallest effect of interest delta = {self.delta:g} {self.units} "
            f"({self.why}). reproduced if the interval lies entirely on the claimed side of zero{size}; "
            f"not reproduced if it lies inside (-delta, +delta) (even if it excludes zero), entirely on the "
            f"other side{miss}; else inconclusive"
        )


@dataclass(frozen=True)
class Bound(_Rule):
    """The claim: the quantity is ``side`` ("below" or "above") ``bound``."""

    side: str
    bound: float
    units: str
    why: str  # where the bound comes from
    quantity: str = "the quantity"

    def __post_init__(self) -> None:
        if self.side not in ("below", "above"):
            raise ValueError(f"side must be 'below' or 'above', got {self.side!r}")

    def _decide(self, iv: Interval) -> Decision:
        if not iv.defined:
            return _inconclusive("no interval (measurement failed or too few values)", iv)
        b = self.bound
        below = self.side == "below"
        if (iv.hi < b) if below else (iv.lo > b):
            return Decision(REPRODUCED, f"interval entirely {self.side} {b:g}", iv)
        if (iv.lo >= b) if below else (iv.hi <= b):
            return Decision(NOT_REPRODUCED, f"interval entirely {'at or above' if below else 'at or below'} {b:g}", iv)
        return _inconclusive(f"interval contains {b:g}", iv)

    def text(self) -> str:
        other = "at or above" if self.side == "below" else "at or below"
        return (
            f"claim: {self.quantity} {self.side} {self.bound:g} {self.units} ({self.why}). reproduced if the "
            f"interval lies entirely {self.side} {self.bound:g}; not reproduced if entirely {other} it; else inconclusive"
        )


@dataclass(frozen=True)
class Equivalence(_Rule):
    """The claim: the quantity equals ``value`` within ``tol``."""

    value: float
    tol: float
    units: str
    why: str  # why this tolerance
    quantity: str = "the quantity"

    def _decide(self, iv: Interval) -> Decision:
        if not iv.defined:
            return _inconclusive("no interval (measurement failed or too few values)", iv)
        a, b = self.value - self.tol, self.value + self.tol
        if a < iv.lo and iv.hi < b:
            return Decision(REPRODUCED, f"interval inside ({a:g}, {b:g})", iv)
        if iv.hi <= a or iv.lo >= b:
            return Decision(NOT_REPRODUCED, f"interval entirely outside ({a:g}, {b:g})", iv)
        return _inconclusive(f"interval straddles an end of ({a:g}, {b:g})", iv)

    def text(self) -> str:
        return (
            f"claim: {self.quantity} = {self.value:g} {self.units} within tolerance {self.tol:g} ({self.why}). "
            f"reproduced if the interval lies inside ({self.value - self.tol:g}, {self.value + self.tol:g}); "
            "not reproduced if it lies entirely outside; else inconclusive"
        )


@dataclass(frozen=True)
class ZeroRate(_Rule):
    """The claim: a success rate is 0 (k successes in n trials)."""

    resolution: float  # the Wilson upper bound must fall below this to call the rate 0
    why: str
    quantity: str = "the rate"

    def decide_counts(self, k: int, n: int, level: float = 0.95) -> Decision:
        return _with_spec(self._decide_counts(k, n, level), self)

    def _decide_counts(self, k: int, n: int, level: float) -> Decision:
        lo, hi = wilson(k, n, level)
        iv = Interval(k / n if n else math.nan, lo, hi, level, n)
        if n <= 0:
            return _inconclusive("no trials", iv)
        if k > 0:
            return Decision(NOT_REPRODUCED, f"{k} of {n} succeed: the Wilson interval excludes 0", iv)
        if hi < self.resolution:
            return Decision(REPRODUCED, f"0 of {n}, Wilson upper bound {hi:.3g} < {self.resolution:g}", iv)
        return _inconclusive(f"0 of {n}, but the Wilson upper bound {hi:.3g} is not below {self.resolution:g}", iv)

    def text(self) -> str:
        return (
            f"claim: {self.quantity} is 0. reproduced if no trial succeeds and the 95% Wilson upper bound is "
            f"below {self.resolution:g} ({self.why}); not reproduced if any trial succeeds (the interval then "
            "excludes 0); else inconclusive (too few trials)"
        )


def combine(parts: Mapping[str, Decision], reason: str = "") -> Decision:
    """All parts reproduced -> reproduced; any part not reproduced -> not reproduced; else inconclusive."""
    outs = [d.outcome for d in parts.values()]
    if outs and all(o == REPRODUCED for o in outs):
        outcome = REPRODUCED
    elif NOT_REPRODUCED in outs:
        outcome = NOT_REPRODUCED
    else:
        outcome = INCONCLUSIVE
    why = reason or "; ".join(f"{k}: {d.outcome}" for k, d in parts.items())
    return Decision(outcome, why, None, dict(parts))


COMBINE_TEXT = (
    "the row is reproduced if every part is, not reproduced if any part is not reproduced, else inconclusive"
)


def sequential(measure, decide, looks: Looks):
    """Run ``measure(n)`` at each look and ``decide(data, level)``; stop at the first decisive outcome.

    Returns ``(data, decision, n)`` of the last look taken."""
    data = decision = None
    n = looks.at[0]
    for n in looks.at:
        data = measure(n)
        decision = decide(data, looks.level)
        if decision.outcome != INCONCLUSIVE:
            break
    return data, decision, n


__all__ = [
    "OUTCOMES",
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "Looks",
    "SINGLE",
    "Interval",
    "point",
    "t_interval",
    "worst_as_inf",
    "paired_differences",
    "paired_interval",
    "wilson",
    "Decision",
    "Directional",
    "Bound",
    "Equivalence",
    "ZeroRate",
    "combine",
    "COMBINE_TEXT",
    "sequential",
]

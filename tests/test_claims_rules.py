"""The ledger's verdict rules as code under test: every rule form reaches each outcome from synthetic numbers,
intervals count non-finite runs instead of dropping them, and every registered row's decide() reaches all
three outcomes from its own synthetic examples (or says why one is impossible)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from geoformer.claims import rules as R
from geoformer.claims.registry import all_rows

INF = math.inf


# ------------------------------------------------------------------------------------------ intervals
def test_t_interval_matches_scipy_at_any_level():
    xs = [0.3, -0.1, 0.25, 0.4, 0.05]
    for level in (0.95, 1 - 0.05 / 3, 0.99):
        iv = R.t_interval(xs, level)
        ref = sps.ttest_1samp(xs, 0.0).confidence_interval(level)
        assert iv.lo == pytest.approx(ref.low, abs=1e-12) and iv.hi == pytest.approx(ref.high, abs=1e-12)
        assert iv.n == 5 and iv.n_total == 5 and iv.level == level


def test_non_finite_values_are_counted_and_stretch_the_interval():
    iv = R.t_interval([1.0, 2.0, 3.0, INF], 0.95)
    assert iv.n == 3 and iv.n_inf_high == 1 and iv.hi == INF and math.isfinite(iv.lo)
    iv = R.t_interval([1.0, 2.0, -INF, math.nan], 0.95)
    assert iv.lo == -INF and iv.undefined == 1 and iv.n_total == 4
    assert R.t_interval([-INF, -INF], 0.95).hi == -INF  # every run of the reference diverged
    one = R.t_interval([1.0], 0.95)
    assert one.lo == -INF and one.hi == INF  # one finite value: no interval, never a fake one
    assert not R.t_interval([], 0.95).defined and not R.t_interval([math.nan], 0.95).defined


def test_paired_differences_treat_divergence_as_worst():
    a = R.worst_as_inf([2.0, math.nan, 2.0, math.nan], "high")  # variant diverged in seeds 1 and 3
    b = R.worst_as_inf([2.1, 2.1, math.nan, math.nan], "high")  # reference diverged in seeds 2 and 3
    d = R.paired_differences(dict(enumerate(a)), dict(enumerate(b)))
    assert d[0] == pytest.approx(-0.1) and d[1] == INF and d[2] == -INF and math.isnan(d[3])
    assert R.worst_as_inf([0.5, math.nan], "low") == [0.5, -INF]


def test_wilson_interval_closed_form():
    lo, hi = R.wilson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.0370, abs=1e-4)
    lo, hi = R.wilson(3, 100)
    assert lo == pytest.approx(0.0103, abs=1e-4) and hi == pytest.approx(0.0846, abs=1e-4)


def test_looks_bonferroni_level_and_cap():
    looks = R.Looks()
    assert looks.at == (3, 5, 10) and looks.level == pytest.approx(1 - 0.05 / 3)
    assert looks.capped(5).at == (3, 5) and looks.capped(5).level == pytest.approx(0.975)
    assert looks.capped(2).at == (2,) and "Bonferroni" in looks.text()
    with pytest.raises(ValueError):
        R.Looks((5, 3))


def test_sequential_adds_seeds_only_while_inconclusive():
    seen = []

    def measure(n):
        seen.append(n)
        return {"n": n}

    def decide(data, level):
        return R.Decision(R.REPRODUCED if data["n"] >= 5 else R.INCONCLUSIVE, "x")

    _, d, n = R.sequential(measure, decide, R.Looks())
    assert seen == [3, 5] and n == 5 and d.outcome == R.REPRODUCED
    seen.clear()
    _, d, n = R.sequential(measure, lambda data, level: R.Decision(R.INCONCLUSIVE, "x"), R.Looks())
    assert seen == [3, 5, 10] and d.outcome == R.INCONCLUSIVE


# ------------------------------------------------------------------------------------------ rule forms
def iv(lo, hi):
    return R.Interval((lo + hi) / 2, lo, hi, 0.95, 5)


def test_directional_reaches_every_outcome_and_names_the_branch():
    rule = R.Directional("negative", 0.02, "nats", "why")
    assert rule.decide(iv(-0.08, -0.03)).outcome == R.REPRODUCED
    assert rule.decide(iv(-0.01, 0.015)).outcome == R.NOT_REPRODUCED  # inside the band
    assert rule.decide(iv(-0.015, -0.001)).outcome == R.NOT_REPRODUCED  # excludes 0 but too small to matter
    assert rule.decide(iv(0.01, 0.05)).outcome == R.NOT_REPRODUCED  # the other side
    assert rule.decide(iv(-0.05, 0.01)).outcome == R.INCONCLUSIVE
    d = rule.decide(iv(-0.05, 0.01))
    assert d.detectable == pytest.approx(0.03) and d.spec["form"] == "directional" and d.spec["delta"] == 0.02
    assert rule.decide(R.Interval(math.nan, math.nan, math.nan, 0.95, 0)).outcome == R.INCONCLUSIVE
    up = R.Directional("positive", 1.0, "x", "why")
    assert up.decide(iv(2, 3)).outcome == R.REPRODUCED and up.decide(iv(-3, -2)).outcome == R.NOT_REPRODUCED


def test_directional_with_a_claimed_size():
    rule = R.Directional("negative", 0.3, "r", "why", size=(-1.0, -0.679))
    assert rule.decide(iv(-0.9, -0.6)).outcome == R.REPRODUCED
    assert rule.decide(iv(-0.6, -0.4)).outcome == R.NOT_REPRODUCED  # right side, size contradicted
    assert "claimed size" in rule.text()


def test_bound_and_equivalence_and_zero_rate():
    b = R.Bound("below", 2.0, "%", "why")
    assert [b.decide(iv(*x)).outcome for x in ((0.5, 1.5), (2.0, 3.0), (1.5, 2.5))] == list(R.OUTCOMES)
    a = R.Bound("above", 2.0, "x", "why")
    assert [a.decide(iv(*x)).outcome for x in ((2.5, 3.0), (1.0, 2.0), (1.5, 2.5))] == list(R.OUTCOMES)
    e = R.Equivalence(1.88, 0.05, "nats", "why")
    assert [e.decide(iv(*x)).outcome for x in ((1.86, 1.9), (1.95, 2.0), (1.9, 1.95))] == list(R.OUTCOMES)
    z = R.ZeroRate(0.05, "why")
    assert z.decide_counts(0, 100).outcome == R.REPRODUCED
    assert z.decide_counts(3, 100).outcome == R.NOT_REPRODUCED
    assert z.decide_counts(0, 20).outcome == R.INCONCLUSIVE


def test_combine():
    r, n, i = (R.Decision(o, "") for o in R.OUTCOMES)
    assert R.combine({"a": r, "b": r}).outcome == R.REPRODUCED
    assert R.combine({"a": r, "b": n, "c": i}).outcome == R.NOT_REPRODUCED
    assert R.combine({"a": r, "b": i}).outcome == R.INCONCLUSIVE


def test_decision_round_trips_through_json():
    import json

    d = R.combine({"a": R.Directional("negative", 0.02, "nats", "w").decide(iv(-0.05, 0.01))})
    back = R.Decision.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back.outcome == d.outcome and back.parts["a"].interval == d.parts["a"].interval
    assert back.parts["a"].spec == d.parts["a"].spec


# ------------------------------------------------------------------------------------------ every row
ROWS = all_rows()


def test_rows_are_registered_with_every_field_and_public_origins():
    assert len(ROWS) >= 30
    for row in ROWS.values():
        assert row.claim and row.experiment and row.rule and row.section, row.id
        assert "seeds/" not in row.source and "../shared" not in row.source, row.id
        assert row.depends and all(not p.startswith("/") for p in row.depends), row.id


@pytest.mark.parametrize("rid", list(ROWS))
def test_every_row_reaches_each_outcome(rid):
    row = ROWS[rid]
    for outcome in R.OUTCOMES:
        if outcome in row.impossible:
            assert row.impossible[outcome], f"{rid}: say why {outcome} is impossible"
            continue
        assert outcome in row.examples, f"{rid}: no synthetic example for {outcome!r}"
        d = row.decide(row.examples[outcome], row.looks.level)
        assert d.outcome == outcome, f"{rid}: example for {outcome!r} gave {d.outcome!r} ({d.reason})"
        text = row.describe(row.examples[outcome], d)
        assert isinstance(text, str) and text


def test_an_lr_that_never_moved_counts_as_no_tracking():
    """004-kappa-lr-correlation: a constant lr gives r = 0 exactly (not Pearson's rounding noise of a constant
    series, whose float mean differs from its values), a moving lr its Pearson r."""
    from geoformer.claims.seed004 import _tracking_r

    kappa = [4.2, 20.6, 15.0, 18.3, 22.2, 16.2, 12.5, 18.9, 21.9, 28.1]
    assert _tracking_r([0.001] * 10, kappa) == 0.0
    lr = [1e-3 / (1 + k / 10) for k in kappa]
    assert _tracking_r(lr, kappa) == pytest.approx(float(np.corrcoef(lr, kappa)[0, 1]), abs=1e-12)
    assert _tracking_r(lr, kappa) < -0.9

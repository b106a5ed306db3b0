"""Small-sample statistics for comparing training runs (numpy, and scipy for exact t quantiles).

Everything here works on plain sequences of floats (one value per seed). Non-finite
values (NaN / inf, e.g. from a diverged run) are dropped before computing, so callers
can pass raw per-seed numbers; the returned ``n`` says how many values were used and
``nonfinite`` how many were dropped (the claims ledger's rules in :mod:`geoformer.claims.rules`
count them instead of dropping them).

Conventions
-----------
* ``mean = sum(x) / n``
* sample standard deviation ``s = sqrt(sum((x - mean)**2) / (n - 1))`` (``ddof=1``)
* two-sided ``level`` t-interval (default 95 %): ``mean ± t_{(1 + level)/2, df} * se``, with the exact
  Student-t quantile for every (also non-integer) ``df`` from ``scipy.stats.t.ppf``
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _sps

__all__ = ["mean_std", "t_quantile", "t_quantile_975", "paired_diff_ci", "welch_ci", "pearson"]


def t_quantile(df: float, level: float = 0.95) -> float:
    """Critical value ``t_{(1 + level)/2, df}`` of a two-sided ``level`` interval, exact for any ``df > 0``
    (non-integer ``df`` from Welch included); NaN for ``df <= 0`` or NaN."""
    if df is None or not (df > 0) or not (0 < level < 1):
        return math.nan
    return float(_sps.t.ppf(0.5 + level / 2, df))


def t_quantile_975(df: float) -> float:
    """``t_quantile(df, 0.95)``: the two-sided 95 % critical value (12.706 at df 1, 1.960 as df -> inf)."""
    return t_quantile(df, 0.95)


def _finite(xs: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray([np.nan if x is None else x for x in xs], dtype=float).ravel()
    return arr[np.isfinite(arr)]


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values of ``xs``.

    ``mean = sum(x) / n``, ``std = sqrt(sum((x - mean)**2) / (n - 1))`` (ddof=1).
    One value gives ``std = 0.0``; no finite value gives ``(nan, nan)``.
    """
    arr = _finite(xs)
    n = arr.size
    if n == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    return mean, std


def paired_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean difference ``a - b`` paired by position, with a two-sided ``level`` t-interval.

    ``d_i = a_i - b_i`` for each position where both values are finite (position = seed),
    ``mean = mean(d)``, ``se = s_d / sqrt(n)`` with ``s_d`` the sample std (ddof=1) of ``d``,
    ``[lo, hi] = mean ∓ t_{(1+level)/2, n-1} * se``. With ``n < 2`` the interval is ``(nan, nan)``
    (``mean`` is still reported for ``n == 1``, NaN for ``n == 0``).

    Returns ``{"mean", "lo", "hi", "n", "nonfinite"}`` (``nonfinite``: pairs dropped for a NaN / inf).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci needs equal lengths, got {len(a)} and {len(b)}")
    aa = np.asarray([np.nan if x is None else x for x in a], dtype=float)
    bb = np.asarray([np.nan if x is None else x for x in b], dtype=float)
    keep = np.isfinite(aa) & np.isfinite(bb)
    d = (aa - bb)[keep]
    n, dropped = int(d.size), int((~keep).sum())
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "nonfinite": dropped}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n, "nonfinite": dropped}
    half = t_quantile(n - 1, level) * float(d.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "nonfinite": dropped}


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Difference of means ``mean(a) - mean(b)`` for unpaired samples, Welch ``level`` interval (default 95 %).

    ``se = sqrt(s_a**2 / n_a + s_b**2 / n_b)`` (sample variances, ddof=1);
    Welch–Satterthwaite ``df = se**4 / ((s_a**2/n_a)**2/(n_a-1) + (s_b**2/n_b)**2/(n_b-1))``;
    ``[lo, hi] = diff ∓ t_{(1+level)/2, df} * se`` (exact quantile at the non-integer ``df``). If both variances are zero the interval
    collapses to the point (``df = n_a + n_b - 2``). Needs ``n_a, n_b >= 2`` for an
    interval, otherwise ``lo = hi = nan``.

    Returns ``{"mean", "lo", "hi", "n_a", "n_b", "df"}``.
    """
    xa, xb = _finite(a), _finite(b)
    na, nb = int(xa.size), int(xb.size)
    out = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n_a": na, "n_b": nb, "df": math.nan}
    if na == 0 or nb == 0:
        return out
    out["mean"] = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return out
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        df = float(na + nb - 2)
    else:
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = t_quantile(df, level) * se
    out.update(lo=out["mean"] - half, hi=out["mean"] + half, df=df)
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation ``r = sum(dx * dy) / sqrt(sum(dx**2) * sum(dy**2))``.

    ``dx = x - mean(x)``, ``dy = y - mean(y)``, over positions where both are finite.
    Returns NaN with fewer than 2 pairs or when either side is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"pearson needs equal lengths, got {len(x)} and {len(y)}")
    xx = np.asarray([np.nan if v is None else v for v in x], dtype=float)
    yy = np.asarray([np.nan if v is None else v for v in y], dtype=float)
    keep = np.isfinite(xx) & np.isfinite(yy)
    xx, yy = xx[keep], yy[keep]
    if xx.size < 2 or xx.min() == xx.max() or yy.min() == yy.max():
        return math.nan  # constant: r is undefined (the float mean of equal values need not equal them)
    dx, dy = xx - xx.mean(), yy - yy.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denom == 0.0:
        return math.nan
    return float(np.clip((dx * dy).sum() / denom, -1.0, 1.0))

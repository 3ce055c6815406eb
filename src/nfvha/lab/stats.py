"""The statistics every figure uses, defined once: the benchmarks, the probe, the scenarios and
``nfvha predict`` all summarise with these, so two tables never disagree on what "p95" means.

Percentile: linear interpolation between closest ranks (Hyndman & Fan type 7, numpy's default,
``statistics.quantiles(method="inclusive")``): for sorted x of n values, h = (n - 1) p and the
p-quantile is x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]). The median is
``percentile(x, 0.5)``; the maximum ``percentile(x, 1.0)``.

Confidence intervals: Student's t, two-sided, its quantile computed exactly for integer degrees
of freedom (the closed form of the t distribution's CDF, Abramowitz & Stegun 26.7.3-4), so there
is no table to run out of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-quantile (0 <= p <= 1) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be within [0, 1], got {p}")
    ordered = sorted(values)
    h = (len(ordered) - 1) * p
    lo = math.floor(h)
    if lo + 1 >= len(ordered):
        return float(ordered[-1])
    return ordered[lo] + (h - lo) * (ordered[lo + 1] - ordered[lo])


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float | int | None]:
    """n, median, p95 and max, as every results file and table shows them (None when empty)."""
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "median": round(percentile(values, 0.5), digits),
        "p95": round(percentile(values, 0.95), digits),
        "max": round(max(values), digits),
    }


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom (exact for integer df)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # s (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        term = total = 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    c = math.sqrt(c2)  # (2/pi)(theta + s (c + 2/3 c^3 + 2*4/(3*5) c^5 + ... up to c^(df-2)))
    term = total = c
    for j in range(1, (df - 1) // 2):
        term *= c2 * (2 * j) / (2 * j + 1)
        total += term
    return 2 / math.pi * (theta + s * total)


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = ``confidence``: the half-width factor of a two-sided interval
    (2.045 for 95 % and 29 degrees of freedom, i.e. 30 runs)."""
    if df < 1:
        raise ValueError("a t quantile needs at least 1 degree of freedom")
    lo, hi = 0.0, 1.0
    while t_within(hi, df) < confidence:
        hi *= 2
    for _ in range(200):  # bisection to the float's resolution
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_within(mid, df) < confidence else (lo, mid)
    return hi


def mean_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width t * s / sqrt(R) of its confidence interval (nan below 2 samples)."""
    n = len(samples)
    mean = math.fsum(samples) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((x - mean) ** 2 for x in samples) / (n - 1)
    return mean, t_quantile(confidence, n - 1) * math.sqrt(var / n)

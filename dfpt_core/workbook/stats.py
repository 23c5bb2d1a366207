"""Paired comparisons over seeds: the mean difference with its 95 % confidence interval (Student's
t, n - 1 degrees of freedom), the way the book states every effect."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: Two-sided 95 % quantiles of Student's t (0.975 one-sided) for 1..30 degrees of freedom
#: (standard tables); beyond 30 the normal 1.96 is within 2 % of them.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_975(df: int) -> float:
    if df < 1:
        raise ValueError(
            f"a confidence interval needs at least 2 paired runs (df >= 1), got df={df}"
        )
    return T_975[df - 1] if df <= len(T_975) else 1.96


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """a - b paired by position (seed): {"mean", "ci95": [low, high], "n", "diffs", "shown"}
    where `shown` says whether the interval excludes 0."""
    if len(a) != len(b):
        raise ValueError(f"paired runs differ in number: {len(a)} vs {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    half = t_975(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    low, high = mean - half, mean + half
    return {"mean": mean, "ci95": [low, high], "n": n, "diffs": diffs, "shown": low > 0 or high < 0}


def describe(d: dict, unit: str = " points") -> str:
    """'+1.23 points (95 % CI -0.40 to +2.86, 5 seeds): not shown' style text."""
    low, high = d["ci95"]
    verdict = "shown" if d["shown"] else "not shown at this scale"
    return f"{d['mean']:+.2f}{unit} (95 % CI {low:+.2f} to {high:+.2f}, {d['n']} seeds): {verdict}"

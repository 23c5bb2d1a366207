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


def power(sd: float, effect: float, n: int) -> float:
    """Probability that n paired seeds give a 95 % CI that excludes 0 on the side of a true
    mean difference `effect`, when paired differences spread with standard deviation `sd`
    (normal approximation with the t quantile: Phi(|effect| sqrt(n) / sd - t_975(n - 1)))."""
    if sd <= 0:
        raise ValueError(f"sd must be > 0, got {sd}")
    return statistics.NormalDist().cdf(abs(effect) * math.sqrt(n) / sd - t_975(n - 1))


def seeds_needed(sd: float, effect: float, target: float = 0.8, most: int = 30) -> int | None:
    """The fewest seeds (>= 2) with `power` >= `target` for a true difference `effect` given a
    pilot's paired standard deviation `sd`; None if more than `most` would be needed."""
    return next((n for n in range(2, most + 1) if power(sd, effect, n) >= target), None)

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


def pilot_design(diffs: Sequence[Sequence[float]], pilot: int = 2, effect: float = 1.0) -> dict:
    """What a design's first `pilot` seeds said about it: `diffs` holds, per comparison, its
    paired differences over all seeds. Returns the median over comparisons of the pilot seeds'
    sample standard deviation ("pilot_sd") and of all seeds' ("sd"), the seeds needed for 80 %
    power at `effect` from the pilot ("needed", None beyond 30), and the power of all the seeds
    at `effect` and twice it, from the pilot's spread ("power", "power_2x") and from all seeds'
    ("power_all", "power_all_2x")."""
    n = min((len(d) for d in diffs), default=0)
    if pilot < 2 or n < pilot:
        raise ValueError(
            f"a pilot needs >= 2 seeds in every comparison; got pilot={pilot}, {n} seeds"
        )
    pilot_sd = statistics.median(statistics.stdev(d[:pilot]) for d in diffs)
    sd = statistics.median(statistics.stdev(d) for d in diffs)
    spread = pilot_sd > 0  # no spread at all: any two seeds show any effect
    return {
        "pilot_sd": pilot_sd,
        "sd": sd,
        "n": n,
        "needed": seeds_needed(pilot_sd, effect) if spread else 2,
        "power": power(pilot_sd, effect, n) if spread else 1.0,
        "power_2x": power(pilot_sd, 2 * effect, n) if spread else 1.0,
        "power_all": power(sd, effect, n) if sd > 0 else 1.0,
        "power_all_2x": power(sd, 2 * effect, n) if sd > 0 else 1.0,
        "effect": effect,
        "pilot": pilot,
    }


def describe_design(d: dict, unit: str = "point") -> str:
    """`pilot_design` in one paragraph of prose."""
    needed = f"about {d['needed']}" if d["needed"] else "more than 30"
    return (
        f"Pilot (the first {d['pilot']} seeds): the paired differences spread with a standard "
        f"deviation of {d['pilot_sd']:.2f} {unit}s (median over the comparisons). To show a "
        f"{d['effect']:g}-{unit} effect with 80 % probability takes {needed} seeds; this "
        f"design's {d['n']} seeds have a power of {d['power']:.0%} for {d['effect']:g} {unit} "
        f"and {d['power_2x']:.0%} for {2 * d['effect']:g}. Over all {d['n']} seeds the spread "
        f"is {d['sd']:.2f} {unit}s (a spread estimated from {d['pilot']} seeds is itself rough), "
        f"which gives a power of {d['power_all']:.0%} for {d['effect']:g} {unit} and "
        f"{d['power_all_2x']:.0%} for {2 * d['effect']:g}. "
        "A comparison whose interval includes 0 is not shown at "
        "this scale: its effect may be real but smaller than this design can see."
    )

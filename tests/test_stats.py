"""Paired differences with 95 % t intervals (dfpt_core.workbook.stats)."""

import math
import statistics

import pytest

from dfpt_core.workbook.stats import describe, paired_difference, t_975


def test_t_quantiles_are_the_table_values():
    assert t_975(1) == 12.706 and t_975(4) == 2.776 and t_975(30) == 2.042
    assert t_975(200) == 1.96
    with pytest.raises(ValueError, match="at least 2 paired runs"):
        t_975(0)


def test_paired_difference_by_hand():
    """Differences 1, 2, 3, 4, 5: mean 3, sample sd sqrt(2.5), half-width 2.776 sqrt(2.5 / 5)."""
    a, b = [11.0, 12.0, 13.0, 14.0, 15.0], [10.0] * 5
    d = paired_difference(a, b)
    half = 2.776 * math.sqrt(2.5 / 5)
    assert d["mean"] == 3.0 and d["n"] == 5 and d["diffs"] == [1, 2, 3, 4, 5]
    assert d["ci95"] == pytest.approx([3 - half, 3 + half]) and d["shown"]
    assert (
        describe(d) == f"+3.00 points (95 % CI {3 - half:+.2f} to {3 + half:+.2f}, 5 seeds): shown"
    )


def test_pairing_removes_the_shared_seed_effect():
    """Runs that differ by a constant 0.5 on seeds whose level varies a lot: the paired interval
    is a point at 0.5 (shown), while the unpaired spread would hide it."""
    level = [60.0, 70.0, 80.0]
    d = paired_difference([x + 0.5 for x in level], level)
    assert d["ci95"] == pytest.approx([0.5, 0.5]) and d["shown"]
    assert statistics.stdev(level) > 5
    mixed = paired_difference([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert not mixed["shown"] and "not shown at this scale" in describe(mixed)
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([1.0], [1.0, 2.0])

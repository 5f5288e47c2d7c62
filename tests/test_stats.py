"""Statistics over seeds (sbrun/plots/stats.py), checked against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sbrun.plots import stats

# Student t quantiles from printed tables (two-sided 95%): t_{0.975, 2} and t_{0.975, 4}.
T_2DOF = 4.302653
T_4DOF = 2.776445


def test_confidence_interval_matches_a_hand_computation():
    # values 0.10, 0.12, 0.14: mean 0.12; deviations -0.02, 0, 0.02 -> s^2 = 0.0008 / 2 -> s = 0.02;
    # half-width t_{0.975,2} * s / sqrt(3) = 4.302653 * 0.02 / 1.7320508 = 0.04968275.
    s = stats.summarize([0.10, 0.12, 0.14])
    assert s.n == 3
    assert s.mean == pytest.approx(0.12)
    assert s.sd == pytest.approx(0.02)
    # the printed quantile has 7 significant digits, so 1e-6 relative is the honest tolerance
    assert s.half == pytest.approx(0.04968275, rel=1e-6)
    assert (s.lo, s.hi) == pytest.approx((0.12 - 0.04968275, 0.12 + 0.04968275), rel=1e-6)
    assert stats.t_quantile(2) == pytest.approx(T_2DOF, rel=1e-6)


def test_vectorised_half_widths_agree_and_need_two_values():
    values = [3.0, 5.0, 4.0, 8.0, 6.0]
    s = stats.summarize(values)
    assert s.half == pytest.approx(T_4DOF * np.std(values, ddof=1) / math.sqrt(5), rel=1e-6)
    out = stats.half_widths([s.sd, 1.0, 1.0], [5, 1, 0])
    assert out[0] == pytest.approx(s.half)
    assert math.isnan(out[1]) and math.isnan(out[2])


def test_one_value_has_no_interval_and_missing_values_are_not_values():
    one = stats.summarize([0.3])
    assert one.mean == 0.3 and one.n == 1 and math.isnan(one.sd) and math.isnan(one.half)
    assert stats.summarize([]).n == 0 and math.isnan(stats.summarize([]).mean)
    # NaN marks a seed that never reached a target: it is not part of the mean
    assert stats.summarize([2.0, math.nan, 4.0]) == stats.summarize([2.0, 4.0])


def test_speedups_are_paired_by_seed_when_the_seeds_match():
    base = {0: 10.0, 1: 20.0, 2: 30.0}
    ratios, how = stats.speedups(base, {0: 5.0, 1: 20.0, 2: 10.0})
    assert how == stats.PAIRED
    assert list(ratios) == pytest.approx([2.0, 1.0, 3.0])
    # a seed that never reached the target (either side) gives no ratio
    ratios, how = stats.speedups({0: 10.0, 1: math.nan, 2: 30.0}, {0: 5.0, 1: 5.0, 2: math.nan})
    assert how == stats.PAIRED and list(ratios) == pytest.approx([2.0])


def test_speedups_against_the_baseline_mean_when_the_seeds_differ():
    base = {0: 10.0, 1: 20.0, 2: math.nan}       # baseline mean over its seeds that reached it: 15
    ratios, how = stats.speedups(base, {5: 5.0, 6: 10.0, 7: math.nan})
    assert how == stats.UNPAIRED
    assert list(ratios) == pytest.approx([3.0, 1.5])
    # pairing would give a different answer on the same numbers: the choice matters
    paired, _ = stats.speedups({0: 10.0, 1: 20.0}, {0: 10.0, 1: 5.0})
    unpaired, _ = stats.speedups({0: 10.0, 1: 20.0}, {2: 10.0, 3: 5.0})
    assert list(paired) == pytest.approx([1.0, 4.0]) and list(unpaired) == pytest.approx([1.5, 3.0])
    assert len(stats.speedups({0: math.nan}, {1: 2.0})[0]) == 0

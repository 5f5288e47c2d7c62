"""Statistics over seeds (sbrun/plots/stats.py), checked against hand computations, scipy's own
tests and seeded simulations of coverage and power."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sbrun.plots import stats

# 2000 replications of a nominal 95% interval: the coverage's binomial sd is sqrt(.95 * .05 / 2000)
# = 0.0049, so [0.93, 0.97] is four sds wide on each side.
REPS = 2000
COVERAGE = (0.93, 0.97)

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


def test_paired_diff_is_scipys_paired_t_interval_over_the_pairs_both_have():
    a = [0.12, 0.10, 0.15, math.nan, 0.11]
    b = [0.10, 0.11, 0.11, 0.09, math.nan]
    d = stats.paired_diff(a, b)
    both_a, both_b = [0.12, 0.10, 0.15], [0.10, 0.11, 0.11]       # the pairs where both are finite
    ci = scipy_stats.ttest_rel(both_a, both_b).confidence_interval()
    assert d.n == 3 and d.mean == pytest.approx(np.mean(np.subtract(both_a, both_b)))
    assert (d.lo, d.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert d.sd == pytest.approx(np.std(np.subtract(both_a, both_b), ddof=1))
    one = stats.paired_diff([0.2, math.nan], [0.1, 0.3])
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.lo) and math.isnan(one.hi)
    with pytest.raises(ValueError, match="one length"):
        stats.paired_diff([1.0, 2.0], [1.0])


def test_gmean_ratio_is_a_t_interval_on_the_logs_and_stays_positive():
    ratios = [0.5, 1.2, 3.0, 8.0]
    r = stats.gmean_ratio(ratios + [math.nan])
    logs = np.log(ratios)
    ci = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval()
    assert r.n == 4 and r.gmean == pytest.approx(scipy_stats.gmean(ratios))
    assert (r.lo, r.hi) == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-9)
    # ratios this spread gave the old arithmetic mean ± t-interval a negative lower bound
    old = stats.summarize(ratios)
    assert old.lo < 0 < r.lo < r.gmean < r.hi
    # a ratio and its inverse are symmetric on the log scale
    inv = stats.gmean_ratio([1 / x for x in ratios])
    assert (inv.gmean, inv.lo, inv.hi) == pytest.approx((1 / r.gmean, 1 / r.hi, 1 / r.lo))
    assert math.isnan(stats.gmean_ratio([2.0]).lo) and stats.gmean_ratio([2.0]).gmean == 2.0
    with pytest.raises(ValueError, match="positive"):
        stats.gmean_ratio([1.0, 0.0])


def test_unpaired_ratio_is_welch_on_the_logs_and_counts_the_baselines_variance():
    a, b = [1.0, 2.0, 3.5], [0.5, 1.0, 1.0, 2.0]
    r = stats.unpaired_ratio(a, b)
    ci = scipy_stats.ttest_ind(np.log(b), np.log(a), equal_var=False).confidence_interval()
    assert r.gmean == pytest.approx(scipy_stats.gmean(b) / scipy_stats.gmean(a))
    assert (r.lo, r.hi) == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-9)
    assert r.n == 7 and 0 < r.lo
    # the baseline's spread widens the interval (the old unpaired ratio treated its mean as exact)
    tight = stats.unpaired_ratio(a, [1.0, 1.0, 1.0, 1.0])
    wide = stats.unpaired_ratio(a, [0.25, 4.0, 0.25, 4.0])
    assert tight.gmean == pytest.approx(wide.gmean) and wide.hi / wide.lo > tight.hi / tight.lo
    assert math.isnan(stats.unpaired_ratio([2.0], b).lo)          # one value: no variance, no interval


def test_unpaired_bootstrap_is_seeded_and_agrees_roughly_with_welch():
    rng = np.random.default_rng(5)
    a, b = np.exp(rng.normal(0.0, 0.3, 12)), np.exp(rng.normal(0.4, 0.3, 12))
    boot = stats.unpaired_ratio(a, b, seed=3, method="bootstrap")
    assert boot == stats.unpaired_ratio(a, b, seed=3, method="bootstrap")
    assert boot != stats.unpaired_ratio(a, b, seed=4, method="bootstrap")
    welch = stats.unpaired_ratio(a, b)
    assert boot.gmean == welch.gmean
    # the percentile bootstrap is a little narrower than the t interval at n = 12; 10% on each bound
    assert boot.lo == pytest.approx(welch.lo, rel=0.1) and boot.hi == pytest.approx(welch.hi, rel=0.1)
    with pytest.raises(ValueError, match="welch"):
        stats.unpaired_ratio(a, b, method="nope")


def _coverage(draw, interval, truth) -> float:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(REPS):
        lo, hi = interval(*draw(rng))
        hits += lo <= truth <= hi
    return hits / REPS


def test_intervals_cover_the_truth_95_percent_of_the_time():
    # paired: 4 seeds whose common seed effect (sd 1) cancels; true mean difference 0.3
    def pairs(rng):
        seed = rng.normal(0, 1, 4)
        return seed + 0.3 + rng.normal(0, 0.2, 4), seed + rng.normal(0, 0.2, 4)
    cov = _coverage(pairs, lambda a, b: stats.paired_diff(a, b)[1:3], 0.3)
    assert COVERAGE[0] <= cov <= COVERAGE[1], cov

    # speedups: log-normal ratios with a true geometric mean of 1.5, 5 seeds
    cov = _coverage(lambda rng: (np.exp(rng.normal(math.log(1.5), 0.4, 5)),),
                    lambda r: stats.gmean_ratio(r)[1:3], 1.5)
    assert COVERAGE[0] <= cov <= COVERAGE[1], cov

    # unpaired, unequal spreads and sizes (where a pooled or exact-baseline interval would fail):
    # true ratio of geometric means exp(0.5)
    def two(rng):
        return np.exp(rng.normal(0.0, 0.1, 4)), np.exp(rng.normal(0.5, 0.5, 7))
    cov = _coverage(two, lambda a, b: stats.unpaired_ratio(a, b)[1:3], math.exp(0.5))
    assert COVERAGE[0] <= cov <= COVERAGE[1], cov


def test_detectable_difference_is_the_paired_t_tests_80_percent_power_point():
    d = stats.detectable_difference(1.0, 200)
    # large n: the normal approximation (z_.975 + z_.8) sd / sqrt(n); t quantiles make it 0.5% larger
    normal = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) / math.sqrt(200)
    assert normal < d < 1.01 * normal
    # scales with sd, shrinks with n and grows with the power asked for
    assert stats.detectable_difference(2.5, 8) == pytest.approx(2.5 * stats.detectable_difference(1.0, 8))
    by_n = [stats.detectable_difference(1.0, n) for n in (2, 3, 5, 10, 30)]
    assert all(x > y for x, y in zip(by_n, by_n[1:]))
    by_power = [stats.detectable_difference(1.0, 6, power=p) for p in (0.5, 0.8, 0.9, 0.99)]
    assert all(x < y for x, y in zip(by_power, by_power[1:]))
    assert math.isnan(stats.detectable_difference(1.0, 1)) and math.isnan(stats.detectable_difference(math.nan, 5))
    assert stats.detectable_difference(0.0, 5) == 0.0


@pytest.mark.parametrize("n", [3, 6])
def test_detectable_difference_matches_a_simulated_paired_t_test(n):
    delta = stats.detectable_difference(1.0, n)
    rng = np.random.default_rng(n)
    diffs = rng.normal(delta, 1.0, (4000, n))
    p = scipy_stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
    # 4000 tests: the rejection rate's sd is sqrt(.8 * .2 / 4000) = 0.0063; +-0.025 is four sds
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.025)


def test_median_range_for_maxima():
    m = stats.median_range([0.03, 0.9, 0.05, math.nan])
    assert m == stats.MedianRange(0.05, 0.03, 0.9, 3)
    assert stats.median_range([]).n == 0 and math.isnan(stats.median_range([]).median)


def test_clip_interval_says_when_it_clipped():
    assert stats.clip_interval(-0.02, 0.05) == (0.0, 0.05, True)
    assert stats.clip_interval(0.01, 0.05) == (0.01, 0.05, False)
    assert stats.clip_interval(0.9, 1.3) == (0.9, 1.0, True)
    lo, hi, clipped = stats.clip_interval(math.nan, math.nan)
    assert math.isnan(lo) and math.isnan(hi) and not clipped


def test_speedups_are_paired_by_seed_when_the_seeds_match():
    base = {0: 10.0, 1: 20.0, 2: 30.0}
    sp = stats.speedup(base, {0: 5.0, 1: 20.0, 2: 10.0})
    assert sp.pairing == stats.PAIRED and sp.n == 3
    assert sp.ratio == stats.gmean_ratio([2.0, 1.0, 3.0])
    assert sp.ratio.gmean == pytest.approx(6 ** (1 / 3))
    # one seed set: both times over the seeds in the ratio, and their quotient is the ratio
    assert sp.baseline_time / sp.time == pytest.approx(sp.ratio.gmean)
    sd_log = np.std(np.log([2.0, 1.0, 3.0]), ddof=1)
    assert sp.detectable == pytest.approx(math.exp(stats.detectable_difference(sd_log, 3)))
    # a seed that never reached the target (either side) gives no ratio, and is counted
    sp = stats.speedup({0: 10.0, 1: math.nan, 2: 30.0}, {0: 5.0, 1: 5.0, 2: math.nan})
    assert sp.pairing == stats.PAIRED and sp.ratio.gmean == pytest.approx(2.0) and sp.n == 1
    assert (sp.not_reached, sp.baseline_not_reached) == (1, 1)
    assert (sp.time, sp.baseline_time) == pytest.approx((5.0, 10.0))      # seed 0 only, on both sides


def test_speedups_when_the_seeds_differ_are_welch_on_the_logs():
    base = {0: 10.0, 1: 20.0, 2: math.nan}
    sp = stats.speedup(base, {5: 5.0, 6: 10.0, 7: math.nan})
    assert sp.pairing == stats.UNPAIRED and sp.n == 2 and (sp.not_reached, sp.baseline_not_reached) == (1, 1)
    assert sp.ratio == stats.unpaired_ratio([5.0, 10.0], [10.0, 20.0])
    assert sp.ratio.gmean == pytest.approx(2.0) and math.isnan(sp.detectable)
    # pairing gives a different interval on the same numbers: the choice matters
    paired = stats.speedup({0: 10.0, 1: 20.0}, {0: 5.0, 1: 10.0}).ratio
    unpaired = stats.speedup({0: 10.0, 1: 20.0}, {2: 5.0, 3: 10.0}).ratio
    assert paired.gmean == pytest.approx(unpaired.gmean) == pytest.approx(2.0)
    assert (paired.lo, paired.hi) == pytest.approx((2.0, 2.0))    # the ratio is 2 at each seed
    assert unpaired.lo < 2.0 < unpaired.hi
    nobody = stats.speedup({0: math.nan}, {1: 2.0})
    assert nobody.ratio.n == 1 and math.isnan(nobody.ratio.gmean) and nobody.baseline_not_reached == 1

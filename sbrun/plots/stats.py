"""Statistics over seeds, as a reviewer expects them. Pure functions on plain numbers (numpy and
scipy, no pandas); each returns a small NamedTuple. NaN marks a value that does not exist (a seed
that never reached a target): it is left out, and callers count it and say so.

- `summarize`: mean, sd and a Student-t 95% interval of the mean, mean ± t_{0.975, n-1} · s/√n.
  Right for a quantity that is roughly normal over seeds (a final error); wide with 3-5 seeds,
  which is the honest answer. One value has no interval (NaN).
- `paired_diff`: a_i - b_i over the seeds both ran; the seed-to-seed variation the two share
  (initialisation, data order) cancels, so it detects smaller differences than two separate
  intervals, whose overlap is no test.
- `gmean_ratio`, `unpaired_ratio`: ratios (speedups) on the log scale, where a ratio and its
  inverse are symmetric and an interval exponentiated back stays positive. An arithmetic mean of
  ratios with a symmetric t-interval can give bounds below zero.
- `detectable_difference`: the power line: the smallest true paired difference the design
  detects at 80% power.
- `median_range`: for quantities where a t-interval is wrong (the worst error per seed, a maximum).
- `clip_interval`: bounds clipped to a quantity's domain, saying whether that happened.
"""
from __future__ import annotations

import math
from typing import Dict, Hashable, Iterable, NamedTuple, Tuple

import numpy as np
from scipy import optimize as _optimize
from scipy import stats as _scipy

CONFIDENCE = 0.95
PAIRED, UNPAIRED = "paired", "unpaired"
POWER = 0.8
BOOTSTRAP_RESAMPLES = 4000


class Summary(NamedTuple):
    mean: float
    sd: float       # sample standard deviation (ddof=1); NaN for n < 2
    n: int
    half: float     # half-width of the CONFIDENCE interval of the mean; NaN for n < 2

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half


class Diff(NamedTuple):
    """Mean paired difference with its CONFIDENCE interval; sd is the differences' sample sd."""
    mean: float
    lo: float
    hi: float
    n: int
    sd: float


class Ratio(NamedTuple):
    """Geometric-mean ratio with its CONFIDENCE interval (bounds > 0, or NaN)."""
    gmean: float
    lo: float
    hi: float
    n: int


class MedianRange(NamedTuple):
    median: float
    lo: float       # the smallest value
    hi: float       # the largest value
    n: int


def t_quantile(dof) -> np.ndarray | float:
    """The two-sided CONFIDENCE quantile of Student's t with `dof` degrees of freedom."""
    return _scipy.t.ppf(0.5 + CONFIDENCE / 2, dof)


def finite(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=float)
    return v[np.isfinite(v)]


def summarize(values: Iterable[float]) -> Summary:
    """Mean, sd, n and CI half-width of the finite values given. NaN marks a value that does not
    exist (a seed that never reached a target): callers count those separately and report them."""
    v = finite(values)
    n = len(v)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan)
    if n == 1:
        return Summary(float(v[0]), math.nan, 1, math.nan)
    sd = float(v.std(ddof=1))
    return Summary(float(v.mean()), sd, n, float(t_quantile(n - 1)) * sd / math.sqrt(n))


def half_widths(sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Vectorised CI half-widths for arrays of sample sds and counts (NaN where n < 2)."""
    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    out = np.full(sd.shape, math.nan)
    ok = n >= 2
    out[ok] = t_quantile(n[ok] - 1) * sd[ok] / np.sqrt(n[ok])
    return out


def paired_diff(a: Iterable[float], b: Iterable[float]) -> Diff:
    """Mean of a_i - b_i over the pairs where both are finite, with a Student-t CONFIDENCE
    interval (the paired t-test's); NaN bounds when fewer than two pairs remain."""
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_diff needs two sequences of one length, got {a.shape} and {b.shape}")
    s = summarize((a - b)[np.isfinite(a) & np.isfinite(b)])
    return Diff(s.mean, s.lo, s.hi, s.n, s.sd)


def _logs(values: Iterable[float], what: str) -> np.ndarray:
    v = finite(values)
    if (v <= 0).any():
        raise ValueError(f"{what} must be positive, got {v[v <= 0][0]:g}")
    return np.log(v)


def gmean_ratio(ratios: Iterable[float]) -> Ratio:
    """Geometric mean of positive ratios (NaN ones left out) with a Student-t interval on their
    logs, exponentiated back, so the bounds are > 0. With n < 2 the bounds are NaN. For paired
    ratios this is the interval of the median ratio when the log-ratios are roughly normal."""
    s = summarize(_logs(ratios, "ratios"))
    return Ratio(*(math.exp(x) if np.isfinite(x) else math.nan for x in (s.mean, s.lo, s.hi)), s.n)


def unpaired_ratio(a: Iterable[float], b: Iterable[float], seed: int = 0, method: str = "welch") -> Ratio:
    """gmean(b) / gmean(a) for unpaired samples of positive values (a speedup: a the method's
    times to target, b the baseline's), NaN ones left out; n is len(a) + len(b).

    welch (the default): Welch's t-interval for the difference of mean logs, with the
    Welch-Satterthwaite degrees of freedom, exponentiated back. Both samples' variances enter, so
    the baseline's mean is not treated as exact; it needs two values on each side (else NaN
    bounds). bootstrap: percentile interval of BOOTSTRAP_RESAMPLES resamples of each side, drawn
    with numpy's generator seeded by `seed` (the only use of the seed), for log-times far from
    normal; it too needs two values on each side.
    """
    la, lb = _logs(a, "times (a)"), _logs(b, "times (b)")
    na, nb = len(la), len(lb)
    if not na or not nb:
        return Ratio(math.nan, math.nan, math.nan, na + nb)
    d = float(lb.mean() - la.mean())
    if min(na, nb) < 2:
        return Ratio(math.exp(d), math.nan, math.nan, na + nb)
    if method == "welch":
        va, vb = la.var(ddof=1) / na, lb.var(ddof=1) / nb
        se = math.sqrt(va + vb)
        if se == 0:
            lo = hi = d
        else:
            dof = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
            lo, hi = d - float(t_quantile(dof)) * se, d + float(t_quantile(dof)) * se
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        draws = (rng.choice(lb, (BOOTSTRAP_RESAMPLES, nb)).mean(axis=1)
                 - rng.choice(la, (BOOTSTRAP_RESAMPLES, na)).mean(axis=1))
        tail = 100 * (1 - CONFIDENCE) / 2
        lo, hi = np.percentile(draws, [tail, 100 - tail])
    else:
        raise ValueError(f"unpaired_ratio method must be 'welch' or 'bootstrap', got {method!r}")
    return Ratio(math.exp(d), math.exp(lo), math.exp(hi), na + nb)


def detectable_difference(sd_diff: float, n: int, power: float = POWER, alpha: float = 0.05) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test at level `alpha`
    with n pairs detects with probability `power`, when the differences have sd `sd_diff`.

    Exact for normal differences: the test statistic follows a noncentral t with n-1 degrees of
    freedom and noncentrality δ√n/sd, and the power P(|T| > t_{1-alpha/2, n-1}) is solved for δ.
    NaN for n < 2 or an unknown sd; 0 when the differences do not vary.
    """
    if n is None or n < 2 or not np.isfinite(sd_diff):
        return math.nan
    if sd_diff == 0:
        return 0.0
    dof = n - 1
    crit = _scipy.t.ppf(1 - alpha / 2, dof)

    def shortfall(nc: float) -> float:
        # the far tail (rejecting on the wrong side) is < 1e-8 wherever the root can lie, and
        # scipy's nct.cdf returns NaN for some such points: count it as 0 there
        wrong_side = np.nan_to_num(_scipy.nct.cdf(-crit, dof, nc))
        return _scipy.nct.sf(crit, dof, nc) + wrong_side - power

    # the power grows with the noncentrality from alpha (at 0): double the bracket until it holds
    # the root (scipy's nct turns NaN at very large noncentralities, so no fixed wide bracket)
    hi = crit + 2.0
    while shortfall(hi) < 0:
        hi *= 2
    nc = _optimize.brentq(shortfall, 0.0, hi, xtol=1e-10)
    return float(nc * sd_diff / math.sqrt(n))


def median_range(values: Iterable[float]) -> MedianRange:
    """Median, smallest and largest of the finite values, and their number: for per-seed maxima
    (a worst error), whose distribution is skewed and bounded, so a t-interval would be wrong."""
    v = finite(values)
    if not len(v):
        return MedianRange(math.nan, math.nan, math.nan, 0)
    return MedianRange(float(np.median(v)), float(v.min()), float(v.max()), len(v))


def clip_interval(lo: float, hi: float, low: float = 0.0, high: float = 1.0) -> Tuple[float, float, bool]:
    """(lo, hi) clipped to [low, high] (an error rate's domain by default), and whether either
    bound moved: callers that clip must say so (a column, a footnote, a caption)."""
    clo, chi = min(max(lo, low), high), max(min(hi, high), low)
    moved = (np.isfinite(lo) and clo != lo) or (np.isfinite(hi) and chi != hi)
    return (clo if np.isfinite(lo) else lo), (chi if np.isfinite(hi) else hi), bool(moved)


def pairing(base_seeds: Iterable[Hashable], seeds: Iterable[Hashable]) -> str:
    """PAIRED when a configuration ran exactly the baseline's seeds, else UNPAIRED."""
    return PAIRED if set(base_seeds) == set(seeds) else UNPAIRED


class Speedup(NamedTuple):
    ratio: Ratio                # the baseline's time / the configuration's: geometric mean and CI
    pairing: str                # PAIRED or UNPAIRED
    n: int                      # the configuration's seeds in the ratio (pairs, when paired)
    time: float                 # the configuration's geometric-mean time over the seeds in `ratio`
    baseline_time: float        # the baseline's, over the same seeds (paired) or all it reached (unpaired)
    not_reached: int            # the configuration's seeds that never reached the target
    baseline_not_reached: int   # the baseline's seeds that never reached it
    detectable: float           # the smallest speedup factor (or its inverse) detected at POWER; NaN unpaired


def _gmean(values: np.ndarray) -> float:
    return float(np.exp(np.log(values).mean())) if len(values) else math.nan


def speedup(base: Dict[Hashable, float], mine: Dict[Hashable, float], seed: int = 0) -> Speedup:
    """Speedup of a configuration over the baseline from {seed: time to target}; NaN (or a
    non-positive time, which no ratio can use) marks a seed that never reached the target.

    paired (the configuration ran exactly the baseline's seeds): gmean_ratio of base[s] / mine[s]
    over the seeds where both reached it, and both times over those same seeds, so the cell's
    times and its ratio come from one seed set (ratio = baseline_time / time exactly).
    unpaired: unpaired_ratio of every seed each side reached (Welch on the logs; `seed` is for
    its bootstrap variant only). Seeds that never reached the target are counted, never averaged.
    """
    def reached(d):
        return {s: float(t) for s, t in d.items() if np.isfinite(t) and t > 0}
    rb, rm = reached(base), reached(mine)
    missed = (len(mine) - len(rm), len(base) - len(rb))
    if pairing(base, mine) == PAIRED:
        both = [s for s in mine if s in rm and s in rb]
        tb, tm = np.array([rb[s] for s in both]), np.array([rm[s] for s in both])
        ratio = gmean_ratio(tb / tm)
        sd_log = summarize(np.log(tb / tm)).sd
        return Speedup(ratio, PAIRED, len(both), _gmean(tm), _gmean(tb), *missed,
                       math.exp(detectable_difference(sd_log, len(both))))
    tb, tm = np.array(list(rb.values())), np.array(list(rm.values()))
    return Speedup(unpaired_ratio(tm, tb, seed), UNPAIRED, len(tm), _gmean(tm), _gmean(tb), *missed, math.nan)

"""Statistics over seeds: mean, standard deviation and a Student-t confidence interval, and
per-seed speedups against a baseline. Pure functions on plain numbers.

The interval is the classic one for the mean of n independent seeds: mean ± t_{0.975, n-1} · s/√n,
with s the sample standard deviation (n-1 in the denominator). It assumes the per-seed values
are roughly normal; with 3-5 seeds it is wide, which is the honest answer. One seed has no
interval (NaN), and callers say so instead of drawing or printing one.
"""
from __future__ import annotations

import math
from typing import Dict, Hashable, Iterable, NamedTuple, Tuple

import numpy as np
from scipy import stats as _scipy

CONFIDENCE = 0.95
PAIRED, UNPAIRED = "paired", "unpaired"


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


def pairing(base_seeds: Iterable[Hashable], seeds: Iterable[Hashable]) -> str:
    """PAIRED when a configuration ran exactly the baseline's seeds, else UNPAIRED."""
    return PAIRED if set(base_seeds) == set(seeds) else UNPAIRED


def speedups(base: Dict[Hashable, float], cfg: Dict[Hashable, float]) -> Tuple[np.ndarray, str]:
    """Per-seed speedups of a configuration over the baseline, from {seed: time to target}
    (NaN = never reached), and how they were formed.

    paired: the configuration has exactly the baseline's seeds, so seed s gives base[s] / cfg[s]
    (seed-to-seed variation common to both cancels); seeds where either never reached the target
    give no ratio. unpaired: otherwise, each seed's ratio is the baseline's mean time (over its
    seeds that reached the target) / cfg[s].
    """
    if pairing(base, cfg) == PAIRED:
        return finite(base[s] / cfg[s] if cfg[s] > 0 else math.nan for s in cfg), PAIRED
    ref = finite(base.values())
    if not len(ref):
        return np.array([]), UNPAIRED
    mean = float(ref.mean())
    return finite(mean / t for t in cfg.values() if t > 0), UNPAIRED

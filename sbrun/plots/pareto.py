"""The equal-compute Pareto figure of sbrun-compare: final test error against the work budget,
one line per method (mean over seeds with its 95% CI), every seed's run as a point. Each method
is drawn at its own tuned learning rate."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from . import stats, style


def pareto(finals: pd.DataFrame, stem: Path, baseline: str, formats: Sequence[str] = ("png",)) -> List[Path]:
    """`finals`: one row per run (sampler, budget_amount, seed, test_error, lr)."""
    fig, (ax,) = style.new_figure(1, panel_size=(6.0, 4.2))
    methods = sorted(finals["sampler"].unique(), key=lambda m: (m != baseline, style.family_rank(m), m))
    clipped = False
    for i, method in enumerate(methods):
        m = finals[finals["sampler"] == method]
        colour = style.FAMILIES.get(method, (None, f"C{i}"))[1]
        budgets = np.sort(m["budget_amount"].unique())
        # seeds' own points, nudged apart sideways so that they do not hide each other
        nudge = 1 + 0.015 * (i - (len(methods) - 1) / 2)
        ax.scatter(m["budget_amount"] * nudge, 100 * m["test_error"], s=9, alpha=0.35, color=colour, lw=0)
        s = [stats.summarize(m.loc[m["budget_amount"] == b, "test_error"]) for b in budgets]
        mean = np.array([v.mean for v in s])
        lo = np.clip([v.lo for v in s], 0, 1)
        hi = np.clip([v.hi for v in s], 0, 1)
        clipped |= bool(np.any(np.array([v.lo for v in s]) < 0))
        err = np.nan_to_num(100 * np.vstack([mean - lo, hi - mean]))
        lr = ", ".join(f"{v:g}" for v in sorted(m["lr"].unique()))
        ax.errorbar(budgets * nudge, 100 * mean, yerr=err, marker="o", capsize=3, color=colour,
                    label=f"{style.family_name(method)} (lr {lr})")
    ax.set_xscale("log")
    ax.set_xticks(sorted(finals["budget_amount"].unique()))
    ax.get_xaxis().set_major_formatter(lambda v, _: f"{v:g}")
    ax.get_xaxis().set_minor_formatter(NullFormatter())     # only the budgets are labelled
    ax.set_xlabel("work budget (Traditional-epoch equivalents)")
    ax.set_ylabel("final test error (%)")
    note = "; lower bounds clipped at 0" if clipped else ""
    ax.set_title(f"Error at equal work: mean and {stats.CONFIDENCE:.0%} CI over seeds, dots: seeds{note}",
                 fontsize="small")
    ax.grid(alpha=0.3)
    style.legend(ax)
    return style.save(fig, stem, formats)

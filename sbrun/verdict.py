"""The equal-compute verdict: pure table arithmetic over a comparison's finished runs.

Input is one row per run (its last evaluation), with the columns every sbrun run records
(`sampler`, `lr`, `budget_amount`, `seed`, `status`, `test_error`, `val_error`). Output is the
learning rate chosen per method on validation error, the per-budget paired comparison against a
baseline, the smallest budget that reaches a target, and the verdict in plain words. No I/O, no
training: `sbrun.compare` runs the sweeps and writes what these functions return.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from .plots.stats import detectable_difference, paired_diff, summarize

METHOD = "sampler"
BUDGET = "budget_amount"
FAILED_ERROR = 1.0    # a run that diverged counts as the worst error when choosing its learning rate


def last_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last evaluation (the run's final model)."""
    order = [c for c in ("work", "epoch") if c in runs.columns]
    return runs.sort_values(order).groupby("run", sort=False).tail(1).reset_index(drop=True)


def choose_lr(finals: pd.DataFrame, per_budget: bool, seeds: Sequence[int], metric: str = "val_error") -> pd.DataFrame:
    """The learning rate with the lowest mean `metric` over `seeds`, per method (and per budget
    when `per_budget`). A failed run, or a seed with no finished evaluation (a run that diverged
    before its first), counts as error FAILED_ERROR, so an lr that diverges on some seed is chosen
    only if every lr does. Ties go to the smaller lr (the safer one)."""
    keys = [METHOD, BUDGET] if per_budget else [METHOD]
    f = finals[finals["seed"].isin(seeds)].assign(score=lambda d: score_of(d, metric))
    table = (f.groupby(keys + ["lr"], as_index=False)
              .agg(total=("score", "sum"), seeds=("seed", "nunique"),
                   failed=("status", lambda s: int((s == "failed").sum()))))
    missing = len(set(seeds)) - table["seeds"]
    table[f"mean_{metric}"] = (table["total"] + FAILED_ERROR * missing) / len(set(seeds))
    table["failed"] += missing
    best = table.sort_values(keys + [f"mean_{metric}", "lr"]).groupby(keys, as_index=False).head(1)
    return best.drop(columns=["total"]).reset_index(drop=True)


def score_of(finals: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in finals.columns:
        raise ValueError(f"the runs have no {metric} column; allowed: runs trained with dataset.val_fraction > 0")
    score = finals[metric].astype(float)
    return score.where((finals["status"] != "failed") & score.notna(), FAILED_ERROR)


def at_chosen_lr(finals: pd.DataFrame, choice: pd.DataFrame) -> pd.DataFrame:
    """The runs trained at each method's chosen learning rate."""
    keys = [k for k in (METHOD, BUDGET) if k in choice.columns]
    picked = finals.merge(choice[keys + ["lr"]], on=keys + ["lr"], how="inner")
    return picked


def paired_table(finals: pd.DataFrame, baseline: str, metric: str = "test_error") -> pd.DataFrame:
    """Per budget and method: mean error over seeds with its 95% CI, and the paired difference
    against `baseline` at the same budget (method minus baseline, over the seeds both have), with
    its CI and the smallest difference these pairs detect at 80% power. Errors are fractions."""
    rows = []
    for budget, at in finals.groupby(BUDGET, sort=True):
        base = at[at[METHOD] == baseline].set_index("seed")[metric]
        for method, m in at.groupby(METHOD, sort=False):
            own = m.set_index("seed")[metric]
            s = summarize(own)
            row = {BUDGET: budget, METHOD: method, "lr": m["lr"].iloc[0], "n": s.n,
                   "error_mean": s.mean, "error_ci_low": max(0.0, s.lo), "error_ci_high": min(1.0, s.hi),
                   "failed": int((m["status"] == "failed").sum())}
            if method != baseline and len(base):
                seeds = own.index.intersection(base.index)
                d = paired_diff(own.loc[seeds].to_numpy(float), base.loc[seeds].to_numpy(float))
                row.update(diff_mean=d.mean, diff_ci_low=d.lo, diff_ci_high=d.hi, diff_n=d.n,
                           diff_detectable=detectable_difference(d.sd, d.n))
            rows.append(row)
    return pd.DataFrame(rows)


def smallest_budget(table: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per method, the smallest budget whose mean error is at or below `target` (NaN: none)."""
    out = []
    for method, m in table.groupby(METHOD, sort=False):
        ok = m[m["error_mean"] <= target]
        out.append({METHOD: method, "target_error": target,
                    "smallest_budget": float(ok[BUDGET].min()) if len(ok) else math.nan,
                    "budgets_tried": ", ".join(f"{b:g}" for b in sorted(m[BUDGET]))})
    return pd.DataFrame(out)


def default_target(table: pd.DataFrame, baseline: str, slack: float = 1.1) -> float:
    """The paper's Table 1 target: `slack` times the baseline's mean error at its largest budget."""
    base = table[table[METHOD] == baseline]
    if base.empty:
        raise ValueError(f"no runs of the baseline {baseline!r}; allowed: one of the compared methods")
    return slack * float(base.sort_values(BUDGET)["error_mean"].iloc[-1])


def points(x: float) -> str:
    return f"{100 * x:+.2f}" if np.isfinite(x) else "n/a"


def verdict_lines(table: pd.DataFrame, baseline: str) -> List[str]:
    """One plain sentence per method and budget: better, worse, or no difference detected, with
    the paired CI and what this design could have detected."""
    lines = []
    for _, r in table[table[METHOD] != baseline].iterrows():
        n, lo, hi = int(r.get("diff_n", 0) or 0), r.get("diff_ci_low"), r.get("diff_ci_high")
        head = f"- budget {r[BUDGET]:g}, {r[METHOD]} vs {baseline}: "
        if n < 2 or not np.isfinite(lo):
            lines.append(head + f"only {n} paired seed(s); no interval, no verdict.")
            continue
        if lo == hi == 0:
            lines.append(head + f"identical test error on all {n} paired seeds (the budget ends before selection "
                         f"changes anything, e.g. within the priming epoch).")
            continue
        span = (f"{points(r['diff_mean'])} points of test error [{points(lo)}, {points(hi)}], "
                f"95% CI over {n} paired seeds")
        if hi < 0:
            lines.append(head + f"lower error, {span}.")
        elif lo > 0:
            lines.append(head + f"higher error, {span}.")
        else:
            lines.append(head + f"no difference detected ({span}); this design detects "
                         f"{100 * r['diff_detectable']:.2f} points at 80% power.")
    return lines


def markdown_table(table: pd.DataFrame, columns: Sequence[str]) -> List[str]:
    shown = [c for c in columns if c in table.columns]
    out = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, r in table.iterrows():
        out.append("| " + " | ".join(fmt_cell(r[c], c) for c in shown) + " |")
    return out


COUNTS = {"n", "diff_n", "seeds", "failed"}


def fmt_cell(v, column: str) -> str:
    if isinstance(v, (float, np.floating, int, np.integer)):
        if not np.isfinite(v):
            return "n/a"
        if column in COUNTS:
            return str(int(v))
        if column.startswith(("error", "diff", "mean_val", "target")):
            return f"{100 * v:.2f}"
        return f"{v:g}"
    return str(v)


def report(table: pd.DataFrame, choice: pd.DataFrame, reach: pd.DataFrame, baseline: str,
           header: Optional[List[str]] = None) -> str:
    """The verdict as markdown: chosen learning rates, the paired table, the smallest budgets and
    the sentences. Errors and differences in percentage points."""
    lines = list(header or [])
    lines += ["", "## Learning rates chosen on validation error", ""]
    lines += markdown_table(choice, [METHOD, BUDGET, "lr", "mean_val_error", "seeds", "failed"])
    lines += ["", f"## Test error per budget, paired against {baseline} (percentage points)", ""]
    lines += markdown_table(table, [BUDGET, METHOD, "lr", "n", "error_mean", "error_ci_low", "error_ci_high",
                                    "diff_mean", "diff_ci_low", "diff_ci_high", "diff_n", "diff_detectable", "failed"])
    lines += ["", "Intervals: 95% Student-t over seeds; `diff` is the method's error minus the baseline's on "
              "the same seed; `diff_detectable` is the smallest true paired difference this many seeds detect "
              "with 80% power (two-sided, 5% level). Error intervals are clipped to [0, 100].", ""]
    lines += ["## Smallest budget reaching the target", ""]
    lines += markdown_table(reach, [METHOD, "target_error", "smallest_budget", "budgets_tried"])
    lines += ["", "## Verdict", ""] + verdict_lines(table, baseline)
    return "\n".join(lines) + "\n"

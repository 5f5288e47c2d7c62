"""Time breakdown to a common target error (paper Fig. 1 / Fig. 10).

The target of a group (one experiment at one noise rate) is k x the baseline's final error
(k = 1.2 by default, the middle column of Table 1; baseline Traditional unless --baseline says
otherwise) when every configuration's mean curve reaches it. Otherwise, without a baseline, or
when that target is above 100% error, it is the loosest error every configuration reaches: the
worst configuration's best mean error. The figure title says which target was used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from . import data, style, targets
from .style import NotSupported

PART_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"]


def common_target(curves: pd.DataFrame, baseline_error: float | None, k: float) -> Tuple[float, str]:
    """(target error, how it was chosen) for one group's mean curves (columns config, y)."""
    best = curves.groupby("config")["y"].min()
    goal = targets.target(k, baseline_error) if baseline_error is not None else float("nan")
    if np.isfinite(goal) and (best <= goal + data.TOLERANCE).all():
        return goal, f"{k:g}× the baseline's final error"
    return float(best.max()), "the worst configuration's best error"


def breakdown(df: pd.DataFrame, k: float = 1.2,
              baseline: str = targets.BASELINE) -> Dict[str, Tuple[float, str, pd.DataFrame]]:
    """Per group: (target, rule, table) where the table has one row per configuration with the
    mean over seeds of the cumulative seconds of each time part at the first evaluation whose mean
    error is <= target, and its (mean) epoch, which a compute grid makes fractional."""
    df = data.prepare(df)
    base = {g: s.mean for g, s in targets.baseline_errors(df, targets.choose(df, baseline)).items()}
    cum = ["cum_" + c for c, _ in data.TIME_PARTS]
    if not set(cum) <= set(df.columns):
        raise NotSupported("metrics.csv lacks the time_*_s columns")
    out = {}
    for group, rows in data.split(df, "group"):
        means = rows.groupby(["config", data.EVAL])[["test_error", "epoch"] + cum].mean().reset_index()
        curves = means.rename(columns={"test_error": "y"})
        target, rule = common_target(curves, base.get(group), k)
        table = []
        for cfg, c in curves.groupby("config", sort=False):
            i = data.reach_index(c["y"], target)
            row = c.iloc[i]
            table.append({"config": cfg, "epoch": row["epoch"], **{col: row[col] for col in cum}})
        out[group] = (target, rule, pd.DataFrame(table))
    return out


def time_breakdown(df, out_dir, formats=("png",), k: float = 1.2, baseline: str = targets.BASELINE) -> List[Path]:
    """Stacked bars: backward, forward for selection, forward for training and other seconds
    spent by each configuration until it first reaches its group's common target error."""
    df = data.prepare(df)
    per_group = breakdown(df, k, baseline)
    written = []
    for suffix, exp in data.per_experiment(df):
        panels = data.noise_panels(exp)
        fig, axes = style.new_figure(len(panels), panel_size=(5.5, 4.2))
        for ax, (noise, rows) in zip(axes, panels):
            group = rows["group"].iloc[0]
            target, rule, table = per_group[group]
            labels = style.config_labels(data.configs(rows))
            table = table.set_index("config").loc[[c for c in labels if c in set(table["config"])]]
            pos = np.arange(len(table))
            bottom = np.zeros(len(table))
            for (col, name), colour in zip(data.TIME_PARTS, PART_COLOURS):
                vals = table["cum_" + col].to_numpy(dtype=float)
                ax.bar(pos, vals, bottom=bottom, color=colour, label=name, width=0.65)
                bottom += vals
            for p, total, ep in zip(pos, bottom, table["epoch"]):
                ax.annotate(f"{total:.3g} s\nepoch {ep:.3g}", (p, total), ha="center", va="bottom", fontsize="x-small")
            ax.set_xticks(pos, [labels[c] for c in table.index], rotation=30, ha="right", fontsize="small")
            ax.set_ylabel("training time to target (s)")
            ax.set_ylim(0, bottom.max() * 1.2 if len(bottom) and bottom.max() > 0 else 1)
            ax.set_title(f"{data.noise_title(noise)}\ntarget {100 * target:.2f}% test error "
                         f"({rule})", fontsize="medium")
            ax.grid(alpha=0.3, axis="y")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles[::-1], names[::-1], loc="outside right center", fontsize="small")
        fig.suptitle("Where training time goes until the target error (paper Fig. 1/10; mean over seeds)\n"
                     + data.experiment_title(exp.iloc[0]), fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"time_breakdown{suffix}", formats)
    if not written:
        raise NotSupported("no runs")
    return written

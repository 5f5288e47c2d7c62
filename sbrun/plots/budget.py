"""Final test error against the compute budget: the equal-compute comparison (Kaddour et al.
2023). One line per configuration that differs only in `budget.amount`, with 95% CI bars over
seeds clipped to [0, 100]% (the panel titles say so); one panel per label-noise rate; one figure
per budget unit. The paired differences against the baseline at each budget are in results.csv/md."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from . import data, stats, style
from .curves import error_bars
from .style import NotSupported

UNITS = {"work": "Traditional-epoch equivalents of work", "backprops": "Traditional-epoch equivalents of backprops",
         "epochs": "epochs", "seconds": "seconds"}


def budget(df, out_dir, formats=("png",)) -> List[Path]:
    if "budget_amount" not in df.columns or df["budget_amount"].notna().sum() == 0:
        raise NotSupported("needs runs with a budget swept over several amounts (e.g. budget.unit=work "
                           "budget.amount=2.5,5,10)")
    df = data.drop_duplicate_seeds(df)[0]
    df = df[df["budget_amount"].notna()]
    cfgs = data.configs(df).join(data.config_final_error(df), on="config")
    _, _, config_cols = data.key_columns(df)
    # a line joins configurations that differ only in their budget
    apart = [c for c in config_cols if c not in ("budget_amount", "epochs")]
    cfgs["line"] = cfgs.apply(lambda r: "|".join(data.fmt(r[c]) for c in apart), axis=1)
    if cfgs.groupby("line")["budget_amount"].nunique().max() < 2:
        raise NotSupported("needs one configuration at two or more budget amounts")
    firsts = cfgs.drop_duplicates("line").assign(budget_amount=np.nan)     # one label and look per line
    labels = {r["line"]: lab for (_, r), lab in zip(firsts.iterrows(), style.config_labels(firsts).values())}
    looks = {r["line"]: look for (_, r), look in zip(firsts.iterrows(), style.colours(firsts, within=None).values())}
    written = []
    for unit, part in cfgs.groupby("budget_unit", sort=True):
        noises = sorted(part["label_noise"].fillna(0).unique())
        fig, axes = style.new_figure(len(noises))
        for ax, noise in zip(axes, noises):
            shown = part[part["label_noise"].fillna(0) == noise]
            for line in dict.fromkeys(shown["line"]):
                pts = shown[shown["line"] == line].sort_values("budget_amount")
                colour, ls = looks[line]
                ax.errorbar(pts["budget_amount"], 100 * pts["final_mean"], yerr=error_bars(pts), capsize=3, marker="o",
                            color=colour, ls=ls, label=labels[line])
            ax.set_xlabel(f"budget ({UNITS.get(unit, unit)})")
            ax.set_ylabel("final test error (%)")
            ax.set_title(f"{data.noise_title(noise)}; bars: {stats.CONFIDENCE:.0%} CI over seeds,\n"
                         "clipped to [0, 100]%; paired differences: results.md", fontsize="medium")
            ax.grid(alpha=0.3)
            style.legend(ax)
        r = part.iloc[0]
        setting = f", {r['setting']}" if r.get("setting") else ""
        fig.suptitle(f"Final error at equal compute ({unit} budgets)\n{r['dataset']} / {r['model']}{setting}",
                     fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"budget_{unit}", formats)
    return written

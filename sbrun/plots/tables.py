"""Tables: the speedup table (paper Table 1) and per-configuration final results.

Speedup arithmetic, per group (one experiment at one label-noise rate):
- Traditional's final error E = mean over Traditional's seeds of each seed's last test error;
- target(k) = k * E for each k (1.1, 1.2, 1.4 by default);
- a configuration's time to target(k) is read off its *mean curve over seeds* (mean training
  time and mean test error per epoch): the mean time at the first epoch whose mean error is
  <= target. The mean curve is what the time-to-accuracy figure draws, so table and figure agree,
  and a configuration counts as reaching a target only if its seeds do so on average (per-seed
  times would have to drop or penalise seeds that never reach it);
- speedup(k) = Traditional's time to target(k) / the configuration's time; "–" when the
  configuration never reaches it (Traditional's own row reads 1.00 where it does).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

import pandas as pd

from .. import records
from . import data, style

DEFAULT_KS = (1.1, 1.2, 1.4)
DASH = "–"


def kcol(kind: str, k: float) -> str:
    return f"{kind}_{k:g}x"


def speedup_table(df: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, x: str = "train_time_s") -> pd.DataFrame:
    """One row per configuration of every group that has Traditional runs.

    Columns: group, dataset, model, setting, label, sampler, beta, staleness, selectivity, label_noise, seeds,
    final_error (mean over seeds), baseline_error, and per k: target_<k>x, time_<k>x
    (NaN = never reached) and speedup_<k>x (NaN = never reached).
    """
    df = data.prepare(df)
    cfgs = data.configs(df)
    base = data.baseline_final(df)
    curves = data.mean_curve(df, x)
    finals = data.config_final_error(df)
    rows = []
    labels = style.config_labels(cfgs, within="group")
    for group, members in cfgs.groupby("group", sort=False):
        if group not in base.index:
            continue
        base_cfgs = members.loc[members["sampler"] == data.BASELINE, "config"]
        base_curve = curves[curves["config"].isin(base_cfgs)]
        if base_cfgs.nunique() > 1:
            # Several Traditional configurations in one group: only when a sampler-only override
            # was put on Traditional runs; their pooled final error is the baseline then.
            base_curve = base_curve.groupby("epoch").agg(x=("x", "mean"), y=("y", "mean")).reset_index()
        for _, cfg in members.iterrows():
            curve = curves[curves["config"] == cfg["config"]]
            row = {"group": group, "dataset": cfg["dataset"], "model": cfg["model"], "setting": cfg["setting"],
                   "label": labels[cfg["config"]], "sampler": cfg["sampler"],
                   "beta": cfg["beta"], "staleness": cfg["staleness"], "selectivity": cfg["selectivity"],
                   "label_noise": cfg["label_noise"], "seeds": int(cfg["seeds"]),
                   "final_error": finals.loc[cfg["config"], "final_mean"], "baseline_error": base[group]}
            for k in ks:
                target = k * base[group]
                t_base = data.time_to_target(base_curve["x"], base_curve["y"], target)
                t = data.time_to_target(curve["x"], curve["y"], target)
                row[kcol("target", k)] = target
                row[kcol("time", k)] = t
                row[kcol("speedup", k)] = t_base / t if t > 0 and not math.isnan(t) else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _cell(speedup: float, time: float, unit: str) -> str:
    if math.isnan(time):
        return DASH
    sp = DASH if math.isnan(speedup) else f"{speedup:.2f}×"
    return f"{sp} ({time:.3g} {unit})"


def speedup_markdown(table: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, unit: str = "s") -> str:
    """Markdown: one section per group, cells 'speedup× (time to target)' or '–'."""
    if table.empty:
        return "No group has Traditional runs, so no speedup can be computed.\n"
    out = []
    head = "| Configuration | Seeds | Final error (%) | " + " | ".join(f"{k:g}× target" for k in ks) + " |"
    for _, rows in table.groupby("group", sort=False):
        first = rows.iloc[0]
        tgt = ", ".join(f"{k:g}× = {100 * first[kcol('target', k)]:.2f}%" for k in ks)
        out += [f"### {data.describe_group(first)}", "",
                f"Traditional's final test error: {100 * first['baseline_error']:.2f}% "
                f"(mean over its seeds). Targets: {tgt}. Cells: speedup in training time over "
                f"Traditional (time to reach the target); {DASH} = never reached.", "",
                head, "|" + "---|" * (3 + len(ks))]
        for _, r in rows.iterrows():
            cells = [_cell(r[kcol("speedup", k)], r[kcol("time", k)], unit) for k in ks]
            out.append(f"| {r['label']} | {r['seeds']} | {100 * r['final_error']:.2f} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: seeds, final and best test error, training time, backprops and the
    measured backprop fraction (mean over seeds; errors as fractions)."""
    df = data.prepare(df)
    cfgs = data.configs(df)
    labels = style.config_labels(cfgs, within="group")   # the noise has its own column
    last = df.groupby("run").last()
    per_run = pd.DataFrame({"config": last["config"], "final_error": last["test_error"],
                            "best_error": df.groupby("run")["test_error"].min()})
    for col in ("train_time_s", "backprops", "examples_seen"):   # totals, where recorded
        per_run[col] = last[col] if col in last.columns else float("nan")
    agg = per_run.groupby("config").mean()
    out = cfgs[["config", "dataset", "model", "label_noise", "sampler", "beta", "staleness", "selectivity",
                "seeds"]].copy()
    out.insert(1, "label", out["config"].map(labels))
    out = out.join(agg, on="config")
    out["backprop_frac"] = out["backprops"] / out["examples_seen"]
    return out.drop(columns="config")


def results_markdown(table: pd.DataFrame) -> str:
    lines = ["| Configuration | Dataset / model | Noise | Seeds | Final error (%) | Best error (%) | "
             "Training time (s) | Backprops | Backprop fraction |", "|" + "---|" * 9]
    for _, r in table.iterrows():
        lines.append(f"| {r['label']} | {r['dataset']} / {r['model']} | {style.pct(r['label_noise'])} | "
                     f"{r['seeds']} | {100 * r['final_error']:.2f} | {100 * r['best_error']:.2f} | "
                     f"{r['train_time_s']:.4g} | {r['backprops']:.0f} | {r['backprop_frac']:.3f} |")
    return "\n".join(lines) + "\n"


def write_tables(df: pd.DataFrame, out_dir: Path, ks: Sequence[float] = DEFAULT_KS) -> Tuple[List[Path], str]:
    """speedup.csv/.md and results.csv/.md; returns (paths, the speedup Markdown)."""
    out_dir = Path(out_dir)
    sp = speedup_table(df, ks)
    sp_md = speedup_markdown(sp, ks)
    res = results_table(df)
    files = {"speedup.csv": sp.to_csv(index=False), "speedup.md": sp_md,
             "results.csv": res.to_csv(index=False), "results.md": results_markdown(res)}
    paths = []
    for name, text in files.items():
        records.atomic_write(out_dir / name, text.encode())
        paths.append(out_dir / name)
    return paths, sp_md

"""Tables: the speedup table (paper Table 1) and per-configuration final results, with
statistics over seeds.

Speedup arithmetic, per group (one experiment at one label-noise rate; targets.py):
- the baseline's final error E = mean over its seeds of each seed's last test error;
- target(k) = k × E for each k (1.1, 1.2, 1.4 by default); none above 100% error;
- each seed's time (and work, where metrics.csv records it) to target(k) is its own first
  evaluation at or below the target; seeds that never get there are counted ("2/3 reached")
  and left out of the mean, never averaged in;
- speedup(k) per seed = the baseline's time / the seed's time: paired seed by seed when the
  configuration ran exactly the baseline's seeds, else against the baseline's mean time;
- every statistic is reported as mean, sd, n and the half-width of a 95% Student-t confidence
  interval of the mean (stats.py); one seed gives no interval.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from .. import records
from . import data, stats, style, targets

DEFAULT_KS = (1.1, 1.2, 1.4)
DASH = "–"
X_TIME, X_WORK = "train_time_s", data.WORK
LEGEND = ("Cells: mean ± half-width of the 95% confidence interval over seeds (Student t; no interval "
          "with one seed). Speedup: the baseline's time to the target ÷ the configuration's, per seed; "
          "*paired* when the configuration ran exactly the baseline's seeds (seed by seed), *unpaired* "
          "otherwise (against the baseline's mean time). In brackets: the time to the target over the "
          "seeds that reached it, and 'r/n reached' when some never did; " + DASH + " = no seed reached it, "
          "or the target is above 100% error.")


def kcol(kind: str, k: float) -> str:
    return f"{kind}_{k:g}x"


def _stat(prefix: str, s: stats.Summary, n: bool = True) -> Dict[str, float]:
    """prefix (the mean), prefix_sd, prefix_ci95 (half-width) and, with n, prefix_n."""
    out = {prefix: s.mean, f"{prefix}_sd": s.sd, f"{prefix}_ci95": s.half}
    if n:
        out[f"{prefix}_n"] = s.n
    return out


def _reach_stats(kind: str, k: float, base: Dict, mine: Dict) -> Dict[str, float]:
    """time/work columns and their speedup columns for one target, from {seed: value}."""
    ratios, _ = stats.speedups(base, mine)
    speed = "speedup" if kind == "time" else f"{kind}_speedup"
    return {**_stat(kcol(kind, k), stats.summarize(mine.values())),
            **_stat(kcol(speed, k), stats.summarize(ratios))}


def _by_seed(reach: pd.DataFrame, config: str, column: str) -> Dict:
    """{seed: value} of one configuration's runs in a targets.seed_reach table."""
    mine = reach[reach["config"] == config]
    return dict(zip(mine["seed"], mine[column]))


def _has_work(df: pd.DataFrame) -> bool:
    return X_WORK in df.columns and bool(np.isfinite(df[X_WORK].to_numpy(dtype=float)).any())


def speedup_table(df: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, x: str = X_TIME,
                  baseline: str = targets.BASELINE) -> pd.DataFrame:
    """One row per configuration of every group that has a baseline configuration.

    Columns: group, config (key), experiment, dataset, model, setting, label, sampler, beta, staleness,
    selectivity, label_noise, seeds, seed_list, baseline (its label), baseline_error[_ci95],
    baseline_seeds, pairing (baseline / paired / unpaired), final_error[_sd/_ci95/_n], and per k:
    target_<k>x (NaN above 100% error), reached_<k>x (seeds that reached it), time_<k>x[_sd/_ci95/_n]
    (over those seeds), speedup_<k>x[_sd/_ci95/_n]; where metrics.csv records work, also
    work_<k>x[...] (Traditional-epoch equivalents) and work_speedup_<k>x[...].
    """
    df = data.drop_duplicate_seeds(df)[0]
    cfgs = data.configs(df)
    chosen = targets.choose(df, baseline)
    base_err = targets.baseline_errors(df, chosen)
    runs = data.per_run(df)
    labels = style.config_labels(cfgs, within="group")
    columns = [x] + ([X_WORK] if _has_work(df) else [])
    rows = []
    for group, members in cfgs.groupby("group", sort=False):
        if group not in chosen:
            continue
        be = base_err[group]
        goal = {k: targets.target(k, be.mean) for k in ks}
        reach = {k: targets.seed_reach(df, {group: t}, columns) for k, t in goal.items()}
        base_seeds = runs.loc[runs["config"] == chosen[group], "seed"]
        for _, cfg in members.iterrows():
            mine = runs[runs["config"] == cfg["config"]]
            pairing = "baseline" if cfg["config"] == chosen[group] else stats.pairing(base_seeds, mine["seed"])
            row = {"group": group, "config": cfg["config"], "experiment": data.describe_group(cfg, with_noise=False),
                   "dataset": cfg["dataset"], "model": cfg["model"], "setting": cfg["setting"],
                   "label": labels[cfg["config"]], "sampler": cfg["sampler"], "beta": cfg["beta"],
                   "staleness": cfg["staleness"], "selectivity": cfg["selectivity"],
                   "label_noise": cfg["label_noise"], "seeds": int(cfg["seeds"]), "seed_list": cfg["seed_list"],
                   "baseline": labels[chosen[group]], "baseline_error": be.mean, "baseline_error_ci95": be.half,
                   "baseline_seeds": be.n, "pairing": pairing,
                   **_stat("final_error", stats.summarize(mine["final"]))}
            for k in ks:
                row[kcol("target", k)] = goal[k]
                mine_at = {c: _by_seed(reach[k], cfg["config"], c) for c in columns}
                base_at = {c: _by_seed(reach[k], chosen[group], c) for c in columns}
                row[kcol("reached", k)] = len(stats.finite(mine_at[x].values()))
                row.update(_reach_stats("time", k, base_at[x], mine_at[x]))
                if X_WORK in columns:
                    row.update(_reach_stats("work", k, base_at[X_WORK], mine_at[X_WORK]))
            rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, half: float, spec: str) -> str:
    """'2.00 ± 0.31', or '2.00' where there is no interval (one seed)."""
    return f"{mean:{spec}}" + (f" ± {half:{spec}}" if np.isfinite(half) else "")


def _cell(r, k: float, kind: str, unit: str) -> str:
    """'1.40 ± 0.12× (24.4 ± 2.0 s)', with '; 2/3 reached' when some seeds never got there."""
    seeds, reached = int(r["seeds"]), int(r[kcol(kind, k) + "_n"])
    if not np.isfinite(r[kcol("target", k)]):
        return DASH
    if reached == 0:
        return DASH + (f" (0/{seeds} reached)" if seeds > 1 else "")
    speed = kcol("speedup" if kind == "time" else f"{kind}_speedup", k)
    sp = f"{_pm(r[speed], r[speed + '_ci95'], '.2f')}×" if np.isfinite(r[speed]) else DASH
    at = kcol(kind, k)
    note = f"; {reached}/{seeds} reached" if reached < seeds else ""
    return f"{sp} ({_pm(r[at], r[at + '_ci95'], '.3g')} {unit}{note})"


def _group_title(r) -> str:
    return f"{r['experiment']}, {data.noise_title(r['label_noise'])}"


def _targets_line(first, ks: Sequence[float]) -> str:
    parts = [f"{k:g}× = {100 * first[kcol('target', k)]:.2f}%" if np.isfinite(first[kcol("target", k)])
             else f"{k:g}× = {DASH}" for k in ks]
    above = [k for k in ks if not np.isfinite(first[kcol("target", k)])]
    why = f" ({DASH}: above 100% error, unreachable: the baseline learned next to nothing)" if above else ""
    return f"Targets (k × the baseline's final error): {', '.join(parts)}{why}."


def _grid(rows: pd.DataFrame, ks: Sequence[float], kind: str, unit: str, lead: List[str]) -> List[str]:
    head = "| Configuration | " + " | ".join(lead + [f"{k:g}× target" for k in ks]) + " |"
    out = [head, "|" + "---|" * (1 + len(lead) + len(ks))]
    for _, r in rows.iterrows():
        first = {"Seeds": str(r["seeds"]),
                 "Final error (%)": _pm(100 * r["final_error"], 100 * r["final_error_ci95"], ".2f"),
                 "Pairing": r["pairing"]}
        cells = [first[c] for c in lead] + [_cell(r, k, kind, unit) for k in ks]
        out.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return out


def groups_without_baseline(df: pd.DataFrame, baseline: str = targets.BASELINE) -> List[str]:
    """Titles of the groups where `baseline` names no configuration (they get no speedups)."""
    df = data.prepare(df)
    chosen = targets.choose(df, baseline)
    return [data.describe_group(rows.iloc[0]) for g, rows in data.split(df, "group") if g not in chosen]


def speedup_markdown(table: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, unit: str = "s",
                     missing: Sequence[str] = ()) -> str:
    """Markdown: one section per group with its baseline and targets, a speedup-in-time table
    and, where work is recorded, a work table (Traditional-epoch equivalents); last, the groups
    (`missing`) that have no baseline configuration."""
    tail = [f"No baseline configuration, so no speedups, in: {'; '.join(missing)}.", ""] if missing else []
    if table.empty:
        return "\n".join(["No group has a baseline configuration, so no speedup can be computed.", ""] + tail)
    out = [LEGEND, ""]
    for _, rows in table.groupby("group", sort=False):
        first = rows.iloc[0]
        out += [f"### {_group_title(first)}", "",
                f"Baseline: {first['baseline']}, final test error "
                f"{_pm(100 * first['baseline_error'], 100 * first['baseline_error_ci95'], '.2f')}% "
                f"({first['baseline_seeds']} seed{'s' if first['baseline_seeds'] != 1 else ''}). "
                + _targets_line(first, ks), "",
                "Speedup in training time (time to the target):", ""]
        out += _grid(rows, ks, "time", unit, ["Seeds", "Final error (%)", "Pairing"]) + [""]
        if kcol("work", ks[0]) in rows.columns and rows[kcol("work", ks[0])].notna().any():
            out += ["Speedup in work (work to the target, in Traditional-epoch equivalents):", ""]
            out += _grid(rows, ks, "work", "ep", ["Pairing"]) + [""]
    return "\n".join(out + tail)


def notes(df: pd.DataFrame, table: pd.DataFrame, ks: Sequence[float]) -> List[str]:
    """One-line notes about what the speedup table could not show, each said once."""
    out, above = [], []
    for _, rows in (table.groupby("group", sort=False) if len(table) else []):
        first = rows.iloc[0]
        ks_above = [f"{k:g}×" for k in ks if not np.isfinite(first[kcol("target", k)])]
        if ks_above:
            above.append(f"{'/'.join(ks_above)} in {_group_title(first)} "
                         f"(baseline final error {100 * first['baseline_error']:.2f}%)")
    if above:
        out.append("targets above 100% test error are no targets and read " + DASH + ": " + "; ".join(above))
    return out


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: seeds, final and best test error (mean, sd, 95% CI), and the mean over
    seeds of training time, backprops and the measured backprop fraction (errors as fractions)."""
    df = data.drop_duplicate_seeds(df)[0]
    cfgs = data.configs(df)
    labels = style.config_labels(cfgs, within="group")   # the noise has its own column
    runs = data.per_run(df)
    last = df.groupby("run").last()
    for col in ("train_time_s", "backprops", "examples_seen"):   # totals, where recorded
        runs[col] = last[col] if col in last.columns else math.nan
    rows = []
    for _, cfg in cfgs.iterrows():
        mine = runs[runs["config"] == cfg["config"]]
        rows.append({"label": labels[cfg["config"]], "experiment": data.describe_group(cfg, with_noise=False),
                     **{c: cfg[c] for c in ("dataset", "model", "label_noise", "sampler", "beta", "staleness",
                                            "selectivity", "seeds", "seed_list")},
                     **_stat("final_error", stats.summarize(mine["final"])),
                     **_stat("best_error", stats.summarize(mine["best"]), n=False),
                     **{c: mine[c].mean() for c in ("train_time_s", "backprops", "examples_seen")}})
    out = pd.DataFrame(rows)
    if len(out):
        out["backprop_frac"] = out["backprops"] / out["examples_seen"]
    return out


def results_markdown(table: pd.DataFrame) -> str:
    """One section per experiment; errors as 'mean ± 95% CI half-width' in %."""
    out = []
    for experiment, rows in table.groupby("experiment", sort=False):
        out += [f"### {experiment}", "",
                "| Configuration | Noise | Seeds | Final error (%) | Best error (%) | Training time (s) | "
                "Backprops | Backprop fraction |", "|" + "---|" * 8]
        for _, r in rows.iterrows():
            out.append(f"| {r['label']} | {style.pct(r['label_noise'])} | {r['seeds']} | "
                       f"{_pm(100 * r['final_error'], 100 * r['final_error_ci95'], '.2f')} | "
                       f"{_pm(100 * r['best_error'], 100 * r['best_error_ci95'], '.2f')} | "
                       f"{r['train_time_s']:.4g} | {r['backprops']:.0f} | {r['backprop_frac']:.3f} |")
        out.append("")
    return "\n".join([LEGEND.split(". Speedup")[0] + ".", ""] + out)


def write_tables(df: pd.DataFrame, out_dir: Path, ks: Sequence[float] = DEFAULT_KS,
                 baseline: str = targets.BASELINE) -> Tuple[List[Path], str, List[str]]:
    """speedup.csv/.md and results.csv/.md; returns (paths, the speedup Markdown, notes)."""
    out_dir = Path(out_dir)
    sp = speedup_table(df, ks, baseline=baseline)
    sp_md = speedup_markdown(sp, ks, missing=groups_without_baseline(df, baseline))
    res = results_table(df)
    files = {"speedup.csv": sp.to_csv(index=False), "speedup.md": sp_md,
             "results.csv": res.to_csv(index=False), "results.md": results_markdown(res)}
    paths = []
    for name, text in files.items():
        records.atomic_write(out_dir / name, text.encode())
        paths.append(out_dir / name)
    return paths, sp_md, notes(df, sp, ks)

"""Tables: the speedup table (paper Table 1) and per-configuration final results, with
statistics over seeds (stats.py) a reviewer accepts.

Speedup arithmetic, per group (one experiment at one label-noise rate; targets.py):
- the baseline's final error E = mean over its seeds of each seed's last test error;
- target(k) = k × E for each k (1.1, 1.2, 1.4 by default); none above 100% error;
- each seed's time (and work, where metrics.csv records it) to target(k) is interpolated linearly
  between its last evaluation above the target and its first at or below it (data.reach);
- speedup(k) = the baseline's time / the configuration's, as a geometric mean with a 95% interval
  from a t-interval on the log-ratios (so it is never below 0): paired seed by seed when the
  configuration ran exactly the baseline's seeds, else Welch on the logs, which includes the
  baseline's own variance (stats.speedup). One seed set serves each cell: the times shown are
  geometric means over the very seeds the ratio uses. Seeds that never reach a target are counted
  (not_reached, baseline_not_reached) and shown, never averaged in;
- the final error against the baseline's is a paired difference by seed with its 95% t-interval
  (results table), and every paired comparison gets a power line: the smallest difference (or
  speedup) this many seeds detect at 80% power (stats.detectable_difference);
- error intervals are Student-t intervals of the mean clipped to [0, 100]%, and a '†' (a
  `_ci_clipped` column in the CSV) says where clipping happened.

speedup.csv is long: one row per configuration and target k.
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
CLIPPED = "†"
X_TIME, X_WORK = "train_time_s", data.WORK
SPEED = {"time": "speedup", "work": "work_speedup"}
COUNTS = ("reached", "not_reached", "baseline_not_reached", "speedup_n", "work_speedup_n")
ERRORS = (f"Errors: mean [95% confidence interval] over seeds (Student t; none with one seed); {CLIPPED}: the "
          "interval left [0, 100]% and is clipped to it.")
LEGEND = (ERRORS + " Speedup: the baseline's time to the target ÷ the configuration's, as a geometric mean "
          "[95% interval from a t-interval on the log-ratios]; *paired* seed by seed when the configuration ran "
          "exactly the baseline's seeds, *unpaired* otherwise (Welch interval on the logs, with the baseline's "
          "own variance). Times to a target are interpolated between evaluations. In brackets: the configuration's "
          "vs the baseline's time (geometric means over the seeds the ratio uses), and the seeds that never reached "
          "the target, counted, not averaged; " + DASH + " = no ratio (no seed reached it), or the target is "
          "above 100% error.")
POWER_NOTE = ("Power (two-sided paired t-test at 5%, 80% power, noncentral t): the smallest true effect this "
              "design detects.")


def _error_stat(prefix: str, values, n: bool = True) -> Dict[str, float]:
    """prefix (the mean), prefix_sd, prefix_ci95 (the t half-width), prefix_ci_low/high (the
    interval clipped to [0, 1]), prefix_ci_clipped and, with n, prefix_n."""
    s = stats.summarize(values)
    lo, hi, clipped = stats.clip_interval(s.lo, s.hi)
    out = {prefix: s.mean, f"{prefix}_sd": s.sd, f"{prefix}_ci95": s.half, f"{prefix}_ci_low": lo,
           f"{prefix}_ci_high": hi, f"{prefix}_ci_clipped": clipped}
    if n:
        out[f"{prefix}_n"] = s.n
    return out


def _speed_stats(kind: str, sp: stats.Speedup, is_baseline: bool) -> Dict[str, float]:
    """Columns of one speedup kind (time or work) at one target."""
    name = SPEED[kind]
    return {kind: sp.time, f"baseline_{kind}": sp.baseline_time, f"{name}_gmean": sp.ratio.gmean,
            f"{name}_ci_low": sp.ratio.lo, f"{name}_ci_high": sp.ratio.hi, f"{name}_n": sp.n,
            f"{name}_detectable": math.nan if is_baseline else sp.detectable}


def _by_seed(reach: pd.DataFrame, config: str, column: str) -> Dict:
    """{seed: value} of one configuration's runs in a targets.seed_reach table."""
    mine = reach[reach["config"] == config]
    return dict(zip(mine["seed"], mine[column]))


def _has_work(df: pd.DataFrame) -> bool:
    return X_WORK in df.columns and bool(np.isfinite(df[X_WORK].to_numpy(dtype=float)).any())


def _integers(table: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers, empty where undefined (a target above 100% error), not as 2.0."""
    for col in COUNTS:
        if col in table.columns:
            table[col] = table[col].astype("Int64")
    return table


def speedup_table(df: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, x: str = X_TIME,
                  baseline: str = targets.BASELINE) -> pd.DataFrame:
    """One row per configuration and target k, for every group that has a baseline configuration.

    Columns: group, config (key), experiment, dataset, model, setting, label, sampler, beta, staleness,
    selectivity, label_noise, seeds, seed_list, baseline (its label),
    baseline_error[_ci95/_ci_low/_ci_high/_ci_clipped],
    baseline_seeds, pairing (baseline / paired / unpaired), final_error[_sd/_ci95/_ci_low/_ci_high/_ci_clipped/_n];
    then k, target (NaN above 100% error), reached / not_reached (the configuration's seeds that did /
    never did), baseline_not_reached, time and baseline_time (geometric means over the seeds the ratio
    uses), speedup_gmean, speedup_ci_low, speedup_ci_high, speedup_n (the configuration's seeds in
    the ratio), speedup_detectable (the smallest speedup factor a paired design detects at 80% power); where
    metrics.csv records work, the same for work (Traditional-epoch equivalents): work, baseline_work,
    work_speedup_gmean/_ci_low/_ci_high/_n/_detectable.
    """
    df = data.drop_duplicate_seeds(df)[0]
    cfgs = data.configs(df)
    chosen = targets.choose(df, baseline)
    base_err = targets.baseline_errors(df, chosen)
    runs = data.per_run(df)
    labels = style.config_labels(cfgs, within="group")
    kinds = {"time": x, **({"work": X_WORK} if _has_work(df) else {})}
    rows = []
    for group, members in cfgs.groupby("group", sort=False):
        if group not in chosen:
            continue
        be = base_err[group]
        be_lo, be_hi, be_clipped = stats.clip_interval(be.lo, be.hi)
        goal = {k: targets.target(k, be.mean) for k in ks}
        reach = {k: targets.seed_reach(df, {group: t}, list(kinds.values())) for k, t in goal.items()}
        base_seeds = runs.loc[runs["config"] == chosen[group], "seed"]
        for _, cfg in members.iterrows():
            mine = runs[runs["config"] == cfg["config"]]
            is_base = cfg["config"] == chosen[group]
            head = {"group": group, "config": cfg["config"], "experiment": data.describe_group(cfg, with_noise=False),
                    "dataset": cfg["dataset"], "model": cfg["model"], "setting": cfg["setting"],
                    "label": labels[cfg["config"]], "sampler": cfg["sampler"], "beta": cfg["beta"],
                    "staleness": cfg["staleness"], "selectivity": cfg["selectivity"],
                    "label_noise": cfg["label_noise"], "seeds": int(cfg["seeds"]), "seed_list": cfg["seed_list"],
                    "baseline": labels[chosen[group]], "baseline_error": be.mean, "baseline_error_ci95": be.half,
                    "baseline_error_ci_low": be_lo, "baseline_error_ci_high": be_hi,
                    "baseline_error_ci_clipped": be_clipped, "baseline_seeds": be.n,
                    "pairing": "baseline" if is_base else stats.pairing(base_seeds, mine["seed"]),
                    **_error_stat("final_error", mine["final"])}
            for k in ks:
                row = {**head, "k": k, "target": goal[k]}
                if math.isnan(goal[k]):
                    rows.append(row)
                    continue
                for kind, col in kinds.items():
                    sp = stats.speedup(_by_seed(reach[k], chosen[group], col), _by_seed(reach[k], cfg["config"], col))
                    row.update(_speed_stats(kind, sp, is_base))
                    if kind == "time":
                        row.update(reached=int(cfg["seeds"]) - sp.not_reached, not_reached=sp.not_reached,
                                   baseline_not_reached=sp.baseline_not_reached)
                rows.append(row)
    return _integers(pd.DataFrame(rows))


RATIO = "ratio"   # a format spec of its own: 2 decimals, or 2 significant digits far from 1


def _num(v: float, spec: str) -> str:
    if not np.isfinite(v):
        return DASH
    if spec == RATIO:   # 2-seed intervals can span 1e-5..1e5: '0.00' would read as a zero speedup
        spec = ".2f" if 0.01 <= v < 1000 else ".2g"
    return f"{v:{spec}}"


def _ci(mean: float, lo: float, hi: float, spec: str, scale: float = 1.0, clipped: bool = False) -> str:
    """'2.00 [1.70, 2.30]', with † when clipped, or '2.00' where there is no interval (one seed)."""
    if not np.isfinite(mean):
        return DASH
    text = _num(scale * mean, spec)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{_num(scale * lo, spec)}, {_num(scale * hi, spec)}]" + (CLIPPED if clipped else "")
    return text


def _error_cell(r, prefix: str) -> str:
    return _ci(r[prefix], r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"], ".2f", 100, bool(r[f"{prefix}_ci_clipped"]))


def _cell(r, kind: str, unit: str) -> str:
    """'1.40× [1.10, 1.78] (24.4 vs 34.2 s)', with '; 1/3 never reached' and '; baseline: 1/3 never
    reached' where seeds never got there."""
    if not np.isfinite(r["target"]):
        return DASH
    name, seeds = SPEED[kind], int(r["seeds"])
    missed = [f"{int(r['not_reached'])}/{seeds} never reached"] if r["not_reached"] else []
    if r["baseline_not_reached"] and r["pairing"] != "baseline":
        missed.append(f"baseline: {int(r['baseline_not_reached'])}/{int(r['baseline_seeds'])} never reached")
    if not r[f"{name}_n"]:
        return DASH + (f" ({'; '.join(missed)})" if missed else "")
    mine = _num(r[kind], ".3g")
    if r["pairing"] == "baseline":   # its ratio to itself is 1 exactly: the cell is its time
        return f"1× ({'; '.join([f'{mine} {unit}'] + missed)})"
    sp = _ci(r[f"{name}_gmean"], r[f"{name}_ci_low"], r[f"{name}_ci_high"], RATIO) + "×"
    times = f"{mine} vs {_num(r[f'baseline_{kind}'], '.3g')} {unit}"
    return f"{sp} ({'; '.join([times] + missed)})"


def _group_title(r) -> str:
    return f"{r['experiment']}, {data.noise_title(r['label_noise'])}"


def _by_config(rows: pd.DataFrame) -> Dict[str, Dict[float, pd.Series]]:
    """{config: {k: its row}} of a group's long speedup rows, in table order."""
    out: Dict[str, Dict[float, pd.Series]] = {}
    for _, r in rows.iterrows():
        out.setdefault(r["config"], {})[r["k"]] = r
    return out


def _targets_line(per_k: Dict[float, pd.Series]) -> str:
    goal = {k: r["target"] for k, r in per_k.items()}
    parts = [f"{k:g}× = {100 * t:.2f}%" if np.isfinite(t) else f"{k:g}× = {DASH}" for k, t in goal.items()]
    above = [k for k, t in goal.items() if not np.isfinite(t)]
    why = f" ({DASH}: above 100% error, unreachable: the baseline learned next to nothing)" if above else ""
    return f"Targets (k × the baseline's final error): {', '.join(parts)}{why}."


def _grid(per_config: Dict[str, Dict[float, pd.Series]], kind: str, unit: str, lead: List[str]) -> List[str]:
    ks = list(next(iter(per_config.values())))
    head = "| Configuration | " + " | ".join(lead + [f"{k:g}× target" for k in ks]) + " |"
    out = [head, "|" + "---|" * (1 + len(lead) + len(ks))]
    for per_k in per_config.values():
        r = next(iter(per_k.values()))
        first = {"Seeds": str(r["seeds"]), "Final error (%)": _error_cell(r, "final_error"), "Pairing": r["pairing"]}
        cells = [first[c] for c in lead] + [_cell(per_k[k], kind, unit) for k in ks]
        out.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return out


def _speed_power(per_config: Dict[str, Dict[float, pd.Series]], kinds: Sequence[str]) -> List[str]:
    """One line per comparison with the baseline: the smallest speedup (or slowdown) factor this
    design detects at 80% power, per target and kind."""
    out = []
    for per_k in per_config.values():
        r = next(iter(per_k.values()))
        if r["pairing"] == "baseline":
            continue
        if r["pairing"] != stats.PAIRED:
            out.append(f"- {r['label']} vs {r['baseline']}: unpaired (its seeds are not the baseline's), "
                       "no paired power estimate.")
            continue
        parts = []
        for kind in kinds:
            name = SPEED[kind]
            found = [(k, x) for k, x in per_k.items() if np.isfinite(x.get(f"{name}_detectable", math.nan))]
            if found:
                cells = "/".join(_num(x[f"{name}_detectable"], RATIO) + "×" for _, x in found)
                ks = "/".join(f"{k:g}×" for k, _ in found)
                n = "/".join(str(int(x[f"{name}_n"])) for _, x in found)
                parts.append(f"a speedup in {kind} of {cells} at the {ks} targets (n = {n} seeds)")
        out.append(f"- {r['label']} vs {r['baseline']}: " + (
            f"this design ({r['seeds']} seeds) detects " + "; ".join(parts) + " at 80% power." if parts
            else "fewer than 2 paired seeds reached any target, too few for a power estimate."))
    return out


def groups_without_baseline(df: pd.DataFrame, baseline: str = targets.BASELINE) -> List[str]:
    """Titles of the groups where `baseline` names no configuration (they get no speedups)."""
    df = data.prepare(df)
    chosen = targets.choose(df, baseline)
    return [data.describe_group(rows.iloc[0]) for g, rows in data.split(df, "group") if g not in chosen]


def speedup_markdown(table: pd.DataFrame, ks: Sequence[float] = DEFAULT_KS, unit: str = "s",
                     missing: Sequence[str] = ()) -> str:
    """Markdown: one section per group with its baseline and targets, a speedup-in-time table
    and, where work is recorded, a work table (Traditional-epoch equivalents), then one power line
    per comparison; last, the groups (`missing`) that have no baseline configuration."""
    tail = [f"No baseline configuration, so no speedups, in: {'; '.join(missing)}.", ""] if missing else []
    if table.empty:
        return "\n".join(["No group has a baseline configuration, so no speedup can be computed.", ""] + tail)
    out = [LEGEND, ""]
    for _, rows in table.groupby("group", sort=False):
        per_config = _by_config(rows)
        first = rows.iloc[0]
        seeds = first["baseline_seeds"]
        be = _error_cell(first, "baseline_error")
        out += [f"### {_group_title(first)}", "",
                f"Baseline: {first['baseline']}, final test error (%) {be} ({seeds} seed{'s' if seeds != 1 else ''}). "
                + _targets_line(per_config[first["config"]]), "",
                "Speedup in training time (time to the target):", ""]
        out += _grid(per_config, "time", unit, ["Seeds", "Final error (%)", "Pairing"]) + [""]
        kinds = ["time"]
        if "work_speedup_n" in rows.columns and rows["work_speedup_n"].notna().any():
            kinds.append("work")
            out += ["Speedup in work (work to the target, in Traditional-epoch equivalents):", ""]
            out += _grid(per_config, "work", "ep", ["Pairing"]) + [""]
        power = _speed_power(per_config, kinds)
        out += ([POWER_NOTE, ""] + power + [""]) if power else []
    return "\n".join(out + tail)


def notes(df: pd.DataFrame, table: pd.DataFrame, ks: Sequence[float]) -> List[str]:
    """One-line notes about what the speedup table could not show, each said once."""
    out, above = [], []
    for _, rows in (table.groupby("group", sort=False) if len(table) else []):
        first = rows.iloc[0]
        ks_above = [f"{k:g}×" for k in ks if not np.isfinite(rows.loc[rows["k"] == k, "target"]).all()]
        if ks_above:
            above.append(f"{'/'.join(ks_above)} in {_group_title(first)} "
                         f"(baseline final error {100 * first['baseline_error']:.2f}%)")
    if above:
        out.append("targets above 100% test error are no targets and read " + DASH + ": " + "; ".join(above))
    return out


def results_table(df: pd.DataFrame, baseline: str = targets.BASELINE) -> pd.DataFrame:
    """Per configuration: seeds, final and best test error (mean, sd, 95% CI), the mean over
    seeds of training time, backprops and the measured backprop fraction (errors as fractions),
    and the final error against its group's baseline, paired by seed: diff_mean (this minus the
    baseline), diff_ci_low/high (95% t-interval), diff_n (seeds both ran), diff_sd and
    diff_detectable (the smallest true difference this design detects at 80% power). The
    baseline's own row and groups without one have no difference (NaN)."""
    df = data.drop_duplicate_seeds(df)[0]
    cfgs = data.configs(df)
    labels = style.config_labels(cfgs, within="group")   # the noise has its own column
    chosen = targets.choose(df, baseline)
    runs = data.per_run(df)
    last = df.groupby("run").last()
    for col in ("train_time_s", "backprops", "examples_seen"):   # totals, where recorded
        runs[col] = last[col] if col in last.columns else math.nan
    rows = []
    for _, cfg in cfgs.iterrows():
        mine = runs[runs["config"] == cfg["config"]]
        base = chosen.get(cfg["group"])
        diff = stats.Diff(math.nan, math.nan, math.nan, 0, math.nan)
        if base is not None and base != cfg["config"]:
            b = runs[runs["config"] == base]
            theirs = dict(zip(b["seed"], b["final"]))
            common = [s for s in mine["seed"] if s in theirs]
            diff = stats.paired_diff(mine.set_index("seed").loc[common, "final"], [theirs[s] for s in common])
        lo, hi, clipped = stats.clip_interval(diff.lo, diff.hi, -1.0, 1.0)
        rows.append({"label": labels[cfg["config"]], "experiment": data.describe_group(cfg, with_noise=False),
                     **{c: cfg[c] for c in ("dataset", "model", "label_noise", "sampler", "beta", "staleness",
                                            "selectivity", "seeds", "seed_list")},
                     **_error_stat("final_error", mine["final"]),
                     **_error_stat("best_error", mine["best"], n=False),
                     **{c: mine[c].mean() for c in ("train_time_s", "backprops", "examples_seen")},
                     "baseline": labels[base] if base is not None else "",
                     "diff_mean": diff.mean, "diff_ci_low": lo, "diff_ci_high": hi, "diff_n": diff.n,
                     "diff_sd": diff.sd, "diff_detectable": stats.detectable_difference(diff.sd, diff.n),
                     "diff_ci_clipped": clipped, "is_baseline": base == cfg["config"]})
    out = pd.DataFrame(rows)
    if len(out):
        out["backprop_frac"] = out["backprops"] / out["examples_seen"]
    return out


def _diff_cell(r) -> str:
    """'+0.45 [-0.20, 1.10]' in points, 'baseline', or why there is none."""
    if r["is_baseline"]:
        return "baseline"
    if not r["baseline"]:
        return f"{DASH} (no baseline)"
    if not r["diff_n"]:
        return f"{DASH} (no seed in common)"
    return _ci(r["diff_mean"], r["diff_ci_low"], r["diff_ci_high"], "+.2f", 100, bool(r["diff_ci_clipped"]))


def _diff_power(r) -> str:
    head = f"- {r['label']}, {style.pct(r['label_noise'])} noise, vs {r['baseline']}: "
    if r["diff_n"] < 2:
        return head + f"{r['diff_n']} paired seed(s), too few for an interval or a power estimate."
    return (head + f"this design ({r['diff_n']} seeds) detects a paired difference of "
            f"{100 * r['diff_detectable']:.2f} points at 80% power.")


def results_markdown(table: pd.DataFrame) -> str:
    """One section per experiment; errors as 'mean [95% CI]' in %, the paired difference in
    points against the baseline, then one power line per comparison."""
    out = []
    for experiment, rows in table.groupby("experiment", sort=False):
        out += [f"### {experiment}", "",
                "| Configuration | Noise | Seeds | Final error (%) | Δ final error vs baseline (points, paired) | "
                "Best error (%) | Training time (s) | Backprops | Backprop fraction |", "|" + "---|" * 9]
        for _, r in rows.iterrows():
            out.append(f"| {r['label']} | {style.pct(r['label_noise'])} | {r['seeds']} | "
                       f"{_error_cell(r, 'final_error')} | {_diff_cell(r)} | {_error_cell(r, 'best_error')} | "
                       f"{r['train_time_s']:.4g} | {r['backprops']:.0f} | {r['backprop_frac']:.3f} |")
        compared = rows[~rows["is_baseline"] & (rows["baseline"] != "")]
        if len(compared):
            out += ["", POWER_NOTE, ""] + [_diff_power(r) for _, r in compared.iterrows()]
        out.append("")
    return "\n".join([ERRORS + " Δ: this configuration's final error minus the baseline's, paired by seed "
                      "(the seeds both ran), mean [95% t-interval] in percentage points.", ""] + out)


def write_tables(df: pd.DataFrame, out_dir: Path, ks: Sequence[float] = DEFAULT_KS,
                 baseline: str = targets.BASELINE) -> Tuple[List[Path], str, List[str]]:
    """speedup.csv/.md and results.csv/.md; returns (paths, the speedup Markdown, notes)."""
    out_dir = Path(out_dir)
    sp = speedup_table(df, ks, baseline=baseline)
    sp_md = speedup_markdown(sp, ks, missing=groups_without_baseline(df, baseline))
    res = results_table(df, baseline)
    files = {"speedup.csv": sp.to_csv(index=False), "speedup.md": sp_md,
             "results.csv": res.to_csv(index=False), "results.md": results_markdown(res)}
    paths = []
    for name, text in files.items():
        records.atomic_write(out_dir / name, text.encode())
        paths.append(out_dir / name)
    return paths, sp_md, notes(df, sp, ks)

"""Pure arithmetic over the merged runs table: configurations, mean curves, headings, duplicates.

A *configuration* is everything that defines a run except its seed: every key of the run's
params (summary.json) that the key table does not call operational (see keys.py), plus the
command-line overrides the params do not record (`setting`, e.g. `model.width=16`; `variant`,
the `sampler.*` ones), so two runs that differ in any such key are never averaged as if they
were seeds.

An *experiment* is what a configuration is compared within: dataset, model, batch size, lr,
epochs, budget and `setting` (keys.py). A *group* is an experiment at one label-noise rate; each
group's baseline configuration (targets.py) is what the others are measured against.

Curves are aggregated per evaluation: at a run's k-th evaluation (EVAL: its k-th epoch end, or
its k-th point on a compute grid, `eval.every`, where `epoch` is fractional and differs between
seeds) a configuration's curve sits at the mean over seeds of x (time, backprops, epoch, ...) and
of the test error, with a 95% Student-t confidence interval of the mean error as its band (none for
one seed). Seeds of one configuration evaluate at the same points, so this is exact at the points
measured.

Time (work, backprops) to a target error is interpolated linearly between the last evaluation
above the target and the first at or below it (`reach`): a method evaluated more often per unit of
work is not favoured by its finer grid, as it would be by the first evaluation at the target.
"""
from __future__ import annotations

import json
import math
import textwrap
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .. import records
from ..config import OPERATIONAL, ScoringConfig, key_kind
from ..merge import PARAMS
from . import keys, stats, style

TIME_PARTS = [("time_backward_s", "backward"), ("time_select_fwd_s", "forward (selection)"),
              ("time_train_fwd_s", "forward (training)"), ("time_other_s", "other (data, bookkeeping)")]
# Errors are stored as float fractions; "reached" allows for the rounding of k * error.
TOLERANCE = 1e-9
# metrics.csv's cumulative work, in Traditional-epoch equivalents (sbrun/budget.py); absent in older runs
WORK = "work"
# a run's evaluations numbered 0, 1, ... (prepare): what seeds are aligned on, not `epoch`, which a
# compute grid makes fractional and different between seeds
EVAL = "eval_index"


# --- Configurations --------------------------------------------------------------------------

def split_overrides(overrides: Iterable[str], params: Iterable[str] = PARAMS) -> tuple[str, str]:
    """(setting, variant) strings from a run's command-line overrides.

    Left out: the seed, operational keys (sbrun.config.key_kind) and keys the run's `params`
    record already. Of the rest, sampler.* overrides form the variant (they change the sampler
    beyond its recorded knobs) and every other one the setting (model.width=16, schedule=...).
    """
    params = set(params) | {keys.SEED}
    setting, variant = [], []
    for o in overrides or []:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") or key_kind(key) == OPERATIONAL or keys.recorded(key, params):
            continue
        (variant if key.startswith("sampler.") else setting).append(o.lstrip("+"))
    return " ".join(sorted(setting)), " ".join(sorted(variant))


def attach_overrides(df: pd.DataFrame) -> pd.DataFrame:
    """Add `setting` and `variant` columns from the merged table's `overrides` column."""
    if "setting" in df.columns and "variant" in df.columns:
        return df
    df = df.copy()
    raw = df["overrides"] if "overrides" in df.columns else pd.Series("[]", index=df.index)
    par = df[keys.PARAMS_COLUMN] if keys.PARAMS_COLUMN in df.columns else pd.Series("", index=df.index)
    pairs = {}
    for text, ptext in set(zip(raw, par)):
        # runs merged before params were stored whole record only merge.PARAMS
        recorded = keys.param_keys([ptext]) if isinstance(ptext, str) and ptext else PARAMS
        overrides = json.loads(text) if isinstance(text, str) and text else []
        pairs[text, ptext] = split_overrides(overrides, recorded)
    df["setting"] = [pairs[t, p][0] for t, p in zip(raw, par)]
    df["variant"] = [pairs[t, p][1] for t, p in zip(raw, par)]
    return df


def fmt(v) -> str:
    """A value as it reads on the command line: 2.0 -> '2', None/NaN -> ''."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _key(row, cols: Sequence[str]) -> str:
    return "|".join(f"{c}={fmt(row[c])}" for c in cols)


def key_columns(df: pd.DataFrame) -> Tuple[List[str], List[str], List[str]]:
    """(experiment, group, configuration) columns of this table, the fixed ones plus the params
    keys it records beyond them."""
    exp_extra, knob_extra = keys.extras(df)
    experiment = keys.EXPERIMENT_KEYS + exp_extra
    group = experiment + ["label_noise"]
    return experiment, group, group + keys.SAMPLER_KNOBS + knob_extra


def _params_columns(df: pd.DataFrame) -> None:
    """Give every params key its own column (tables written by merge.py have them already)."""
    if keys.PARAMS_COLUMN not in df.columns:
        return
    parsed = {t: json.loads(t) if isinstance(t, str) and t else {} for t in df[keys.PARAMS_COLUMN].unique()}
    for key in keys.param_keys(parsed):
        if key not in df.columns:
            df[key] = df[keys.PARAMS_COLUMN].map(lambda t, key=key: parsed[t].get(key))


# Runs recorded before every scoring sampler wrote its scoring options left them out at full cost;
# without this, such a run and a scoring.scale=0.5 run would share one legend label.
FULL_COST_SCORING = {"scoring_scale": ScoringConfig().scale, "scoring_precision": ScoringConfig().precision}


def _fill_full_cost_scoring(df: pd.DataFrame) -> None:
    if "selection_forward" not in df.columns:
        return
    scores = df["selection_forward"].notna() & (df["selection_forward"] != "")
    for key, value in FULL_COST_SCORING.items():
        if key in df.columns:
            missing = scores & df[key].isna()
            if missing.any():
                # where() rather than .loc: a column read back all-empty is float64, and pandas 3
                # refuses to set 'fp32' into it (TypeError) instead of upcasting as pandas 2 did
                df[key] = df[key].astype(object).where(~missing, value).infer_objects()


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add the columns every figure uses; idempotent and pure (no file access).

    config / group / experiment: string keys (NaN-safe, unlike groupby on raw params);
    forward_passes: selection forwards + training forwards (Fig. 11's x axis);
    cum_<part>: cumulative seconds of each time component (time-breakdown bars).
    """
    if "config" in df.columns:
        return df
    df = df.copy()
    for col in ("setting", "variant"):
        if col not in df.columns:
            df[col] = ""
        df[col] = df[col].fillna("").astype(str)
    if keys.PARAMS_COLUMN in df.columns:
        df[keys.PARAMS_COLUMN] = df[keys.PARAMS_COLUMN].fillna("").astype(str)
    _params_columns(df)
    _fill_full_cost_scoring(df)
    experiment, group, config = key_columns(df)
    for col in config:
        if col not in df.columns:
            df[col] = np.nan
    df = df[df["test_error"].notna()].sort_values(["run", "epoch"], kind="stable")
    df[EVAL] = df.groupby("run").cumcount()
    # Every key column is constant within a run: build the keys once per run, not per epoch row.
    firsts = df.drop_duplicates("run").set_index("run")
    for name, cols in (("config", config), ("group", group), ("experiment", experiment)):
        keys_of = {run: _key(r, cols) for run, r in firsts.iterrows()}
        df[name] = df["run"].map(keys_of) if len(df) else ""
    if {"select_forwards", "backprops"} <= set(df.columns):
        df["forward_passes"] = df["select_forwards"] + df["backprops"]
    for col, _ in TIME_PARTS:
        if col in df.columns:
            df["cum_" + col] = df.groupby("run")[col].cumsum()
    return df.reset_index(drop=True)


def configs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, in legend order (Traditional first, then by family and knobs),
    with the number of seeds, their list (`seed_list`) and the lowest seed's run directory."""
    df = prepare(df)
    first = df.sort_values(["seed", "run"]).groupby("config", sort=False).first().reset_index()
    first["seeds"] = first["config"].map(df.groupby("config")["run"].nunique())
    seed_lists = df.groupby("config")["seed"].agg(lambda s: " ".join(fmt(v) for v in sorted(set(s.dropna()))))
    first["seed_list"] = first["config"].map(seed_lists)
    first["_rank"] = first["sampler"].map(style.family_rank)
    knob_extra = keys.extras(df)[1]
    order = ["experiment", "label_noise", "_rank", "sampler", "staleness", "beta", "selectivity", "variant",
             *knob_extra]
    first = first.sort_values(order, na_position="first", kind="stable")
    return first.drop(columns="_rank").reset_index(drop=True)


def drop_duplicate_seeds(df: pd.DataFrame) -> Tuple[pd.DataFrame, List[Tuple[str, str]]]:
    """Keep one run per (configuration, seed): a pair run twice (a re-run under another name,
    two sweeps over the same point) is one seed, not two. The kept run is the finished one, then
    the one with most epochs, then the most recent (run_mtime, else the later directory name).
    Returns (table without the others, [(dropped run, kept run), ...])."""
    df = prepare(df)
    if df.empty:
        return df, []
    g = df.groupby("run")
    per = g.agg(config=("config", "first"), seed=("seed", "first"), rows=("epoch", "size"))
    per["finished"] = g["status"].first() == records.FINISHED if "status" in df.columns else False
    per["mtime"] = g["run_mtime"].first() if "run_mtime" in df.columns else np.nan
    per = per.reset_index().sort_values(["finished", "rows", "mtime", "run"], ascending=False, na_position="last")
    per["seed_key"] = per["seed"].map(fmt)
    kept = per.groupby(["config", "seed_key"], sort=False)["run"].transform("first")
    dropped = [(r, k) for r, k in zip(per["run"], kept) if r != k]
    if not dropped:
        return df, []
    gone = {r for r, _ in dropped}
    return df[~df["run"].isin(gone)].reset_index(drop=True), sorted(dropped)


# --- Curves ----------------------------------------------------------------------------------

def mean_curve(df: pd.DataFrame, x: str, y: str = "test_error") -> pd.DataFrame:
    """Per configuration and evaluation (EVAL): mean epoch, mean x and mean y over seeds, the sd
    of y, its 95% CI (y_lo, y_hi; NaN where fewer than two seeds have that evaluation), and how
    many seeds (n).

    Columns: config, eval_index, epoch, x, y, y_sd, y_lo, y_hi, n. Sorted by config and evaluation.
    """
    df = prepare(df)
    g = df.groupby(["config", EVAL], sort=True)
    out = pd.DataFrame({"epoch": g["epoch"].mean(), "x": g[x].mean(), "y": g[y].mean(), "y_sd": g[y].std(ddof=1),
                        "n": g[y].count()})
    half = stats.half_widths(out["y_sd"], out["n"])
    out["y_lo"], out["y_hi"] = out["y"] - half, out["y"] + half
    return out.reset_index()


def reach_index(errors: Sequence[float], target: float) -> Optional[int]:
    """Position of the first error <= target (within TOLERANCE), or None if never reached."""
    hits = np.flatnonzero(np.asarray(errors, dtype=float) <= target + TOLERANCE)
    return int(hits[0]) if len(hits) else None


def reach(errors: Sequence[float], target: float) -> Optional[Tuple[int, float]]:
    """Where a run's error curve first reaches `target`: (i, f) with i the first evaluation at or
    below it and f the fraction of the way from evaluation i-1 (the last above it) to i at which
    linear interpolation of the error crosses the target (1.0 when the very first evaluation is
    already there: nothing before it to interpolate from). None if it never reaches the target."""
    i = reach_index(errors, target)
    if i is None:
        return None
    if i == 0:
        return 0, 1.0
    e = np.asarray(errors, dtype=float)
    drop = e[i - 1] - e[i]
    return i, (float(np.clip((e[i - 1] - target) / drop, 0.0, 1.0)) if drop > 0 else 1.0)


def at_reach(xs: Sequence[float], point: Optional[Tuple[int, float]]) -> float:
    """x (cumulative time, work, backprops) at a `reach` point; NaN for None."""
    if point is None:
        return math.nan
    i, f = point
    x = np.asarray(xs, dtype=float)
    return float(x[i]) if i == 0 else float(x[i - 1] + f * (x[i] - x[i - 1]))


def time_to_target(xs: Sequence[float], errors: Sequence[float], target: float) -> float:
    """x where the error, interpolated linearly between evaluations, first reaches the target;
    NaN if no evaluation reaches it."""
    return at_reach(xs, reach(errors, target))


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: config, group, experiment, seed and final (its last test error), plus its
    best error; indexed by run."""
    df = prepare(df)
    g = df.groupby("run")
    out = g[["config", "group", "experiment", "seed"]].first()
    out["final"] = g["test_error"].last()
    out["best"] = g["test_error"].min()
    return out


def config_final_error(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the final test error's mean, sd, n and 95% CI over seeds: half-width
    (final_half) and bounds clipped to [0, 1] (final_lo, final_hi; final_clipped says where)."""
    runs = per_run(df)
    rows = {cfg: stats.summarize(part["final"])._asdict() for cfg, part in runs.groupby("config")}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(stats.Summary._fields))
    out = out.rename(columns=lambda c: f"final_{c}").astype({"final_n": int})
    bounds = [stats.clip_interval(m - h, m + h) for m, h in zip(out["final_mean"], out["final_half"])]
    for j, col in enumerate(("final_lo", "final_hi", "final_clipped")):
        out[col] = [b[j] for b in bounds]
    return out


def split(df: pd.DataFrame, key: str) -> List[tuple[str, pd.DataFrame]]:
    """(key value, rows) pairs in first-seen order of the prepared table."""
    df = prepare(df)
    return [(k, df[df[key] == k]) for k in dict.fromkeys(df[key])]


# --- Headings and file names -----------------------------------------------------------------

def _row_experiment_extras(r) -> List[str]:
    text = r.get(keys.PARAMS_COLUMN) if hasattr(r, "get") else None
    return [k for k in keys.param_keys([text]) if keys.role(k) == "experiment" and k not in keys.EXPERIMENT_KEYS] \
        if isinstance(text, str) and text else []


def experiment_parts(r) -> List[str]:
    """What identifies a row's experiment, as 'key=value' parts after 'dataset / model': batch
    size, lr, epochs and any budget key, so two experiments never share a heading."""
    parts = [f"{r['dataset']} / {r['model']}"]
    for c in ["batch_size", "lr", "epochs"] + _row_experiment_extras(r):
        v = fmt(r.get(c)) if hasattr(r, "get") else ""
        if v:
            parts.append(f"{c}={v}")
    return parts


def experiment_title(r) -> str:
    """'mnist / cnn, batch_size=128, lr=0.05, epochs=10' plus the experiment's extra overrides on
    wrapped lines, for figure titles."""
    head = ", ".join(experiment_parts(r))
    return head + ("\n" + textwrap.fill(str(r["setting"]), 90) if r.get("setting") else "")


def noise_title(noise) -> str:
    return f"label noise {style.pct(noise)}"


def describe_group(r, with_noise: bool = True) -> str:
    """A one-line title for the experiment or group of a row: 'mnist / cnn, batch_size=128, ...,
    label noise 10%'."""
    parts = experiment_parts(r)
    if r.get("setting"):
        parts.append(str(r["setting"]))
    if with_noise:
        parts.append(noise_title(r["label_noise"]))
    return ", ".join(parts)


def per_experiment(df: pd.DataFrame) -> List[tuple[str, pd.DataFrame]]:
    """(file-name suffix, rows) per experiment. The suffix is empty when there is only one, so the
    common case gets plain names (time_to_accuracy.png); otherwise it names the experiment keys
    whose values differ ('_epochs_10' vs '_epochs_20'), and is made unique if two slugs collide."""
    parts = split(df, "experiment")
    if len(parts) == 1:
        return [("", parts[0][1])]
    experiment, _, _ = key_columns(prepare(df))
    firsts = [rows.iloc[0] for _, rows in parts]
    varying = [c for c in experiment if len({fmt(r[c]) for r in firsts}) > 1]
    out, used = [], set()
    for (_, rows), r in zip(parts, firsts):
        # a key a run does not record kept its default (data_path=auto, no extra setting)
        words = [fmt(r[c]) or "default" if c in ("dataset", "model", "setting") else f"{c}={fmt(r[c]) or 'default'}"
                 for c in varying]
        name = "_" + style.slug(" ".join(words))
        stem, i = name, 2
        while name in used:
            name, i = f"{stem}_{i}", i + 1
        used.add(name)
        out.append((name, rows))
    return out


def noise_panels(df: pd.DataFrame) -> List[tuple[float, pd.DataFrame]]:
    """(label_noise, rows) in increasing noise order; missing noise counts as 0."""
    df = prepare(df)
    noise = df["label_noise"].fillna(0.0).astype(float)
    return [(n, df[noise == n]) for n in sorted(noise.unique())]

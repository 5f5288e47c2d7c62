"""Pure arithmetic over the merged runs table: configurations, mean curves, time to a target.

A *configuration* is everything that defines a run except its seed: the run's params (dataset,
model, sampler, beta, staleness, selectivity, label_noise, batch_size, epochs, lr) plus any other
command-line override (`setting`, e.g. `model.width=16`; `variant`, the `sampler.*` ones), so two
runs that differ in an override the params do not record are never averaged as if they were seeds.

An *experiment* is what a configuration is compared within: the configuration minus the sampler
and its knobs and minus label_noise (label_noise makes the panels). A *group* is an experiment at
one noise rate; each group's Traditional runs are its baseline.

Curves are aggregated per epoch: at epoch e a configuration's curve sits at the mean over seeds of
x (time, backprops, ...) and of the test error, with the seeds' min and max error as a band. Runs
are evaluated at the end of every epoch, so this is exact at the points measured and needs no
interpolation between seeds whose clocks differ.
"""
from __future__ import annotations

import json
import math
import textwrap
from typing import Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import style

SAMPLER_KNOBS = ["sampler", "beta", "staleness", "selectivity", "variant"]
EXPERIMENT_KEYS = ["dataset", "model", "setting", "batch_size", "lr", "epochs"]
GROUP_KEYS = EXPERIMENT_KEYS + ["label_noise"]
CONFIG_KEYS = GROUP_KEYS + SAMPLER_KNOBS
TIME_PARTS = [("time_backward_s", "backward"), ("time_select_fwd_s", "forward (selection)"),
              ("time_train_fwd_s", "forward (training)"), ("time_other_s", "other (data, bookkeeping)")]
BASELINE = "traditional"
# Errors are stored as float fractions; "reached" allows for the rounding of k * error.
TOLERANCE = 1e-9

# Overrides that are recorded in params already, or that do not change what a run computes.
_NOT_SETTINGS = {"seed", "sampler", "beta", "label_noise", "dataset", "model", "epochs", "batch_size",
                 "optim.lr", "name", "out_dir", "data_dir", "device", "progress", "plots", "num_workers",
                 "resume", "loss_snapshots", "extremes", "eval_batch_size", "nan_check"}
_NOT_VARIANTS = {"sampler.beta", "sampler.staleness", "sampler.prob", "sampler.keep"}


# --- Configurations --------------------------------------------------------------------------

def split_overrides(overrides: Iterable[str]) -> tuple[str, str]:
    """(setting, variant) strings from a run's command-line overrides.

    setting: overrides that change the experiment (model.width=16, schedule=..., debug=fast);
    variant: sampler.* overrides that change the sampler beyond beta/staleness/selectivity.
    """
    setting, variant = [], []
    for o in overrides or []:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in _NOT_SETTINGS or key.startswith(("hydra.", "checkpoint.")) or key in _NOT_VARIANTS:
            continue
        (variant if key.startswith("sampler.") else setting).append(o.lstrip("+"))
    return " ".join(sorted(setting)), " ".join(sorted(variant))


def attach_overrides(df: pd.DataFrame) -> pd.DataFrame:
    """Add `setting` and `variant` columns from the merged table's `overrides` column."""
    if "setting" in df.columns and "variant" in df.columns:
        return df
    df = df.copy()
    raw = df["overrides"] if "overrides" in df.columns else pd.Series("[]", index=df.index)
    pairs = {text: split_overrides(json.loads(text) if isinstance(text, str) and text else [])
             for text in raw.unique()}
    df["setting"] = raw.map(lambda t: pairs[t][0])
    df["variant"] = raw.map(lambda t: pairs[t][1])
    return df


def _key(row, cols: Sequence[str]) -> str:
    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
    return "|".join(f"{c}={fmt(row[c])}" for c in cols)


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
    for col in CONFIG_KEYS:
        if col not in df.columns:
            df[col] = np.nan
    df = df[df["test_error"].notna()].sort_values(["run", "epoch"], kind="stable")
    df["config"] = df.apply(lambda r: _key(r, CONFIG_KEYS), axis=1) if len(df) else ""
    df["group"] = df.apply(lambda r: _key(r, GROUP_KEYS), axis=1) if len(df) else ""
    df["experiment"] = df.apply(lambda r: _key(r, EXPERIMENT_KEYS), axis=1) if len(df) else ""
    if {"select_forwards", "backprops"} <= set(df.columns):
        df["forward_passes"] = df["select_forwards"] + df["backprops"]
    for col, _ in TIME_PARTS:
        if col in df.columns:
            df["cum_" + col] = df.groupby("run")[col].cumsum()
    return df.reset_index(drop=True)


def configs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, in legend order (Traditional first, then by family and knobs),
    with the number of seeds and the lowest seed's run directory."""
    df = prepare(df)
    first = df.sort_values(["seed", "run"]).groupby("config", sort=False).first().reset_index()
    first["seeds"] = first["config"].map(df.groupby("config")["run"].nunique())
    first["_rank"] = first["sampler"].map(style.family_rank)
    order = ["experiment", "label_noise", "_rank", "sampler", "staleness", "beta", "selectivity", "variant"]
    first = first.sort_values(order, na_position="first", kind="stable")
    return first.drop(columns="_rank").reset_index(drop=True)


# --- Curves ----------------------------------------------------------------------------------

def mean_curve(df: pd.DataFrame, x: str, y: str = "test_error") -> pd.DataFrame:
    """Per configuration and epoch: mean x, mean/min/max y over seeds, and how many seeds.

    Columns: config, epoch, x, y, y_min, y_max, n. Sorted by config and epoch.
    """
    df = prepare(df)
    g = df.groupby(["config", "epoch"], sort=True)
    out = pd.DataFrame({"x": g[x].mean(), "y": g[y].mean(), "y_min": g[y].min(), "y_max": g[y].max(),
                        "n": g[y].size()}).reset_index()
    return out


def reach_index(errors: Sequence[float], target: float) -> Optional[int]:
    """Position of the first error <= target (within TOLERANCE), or None if never reached."""
    hits = np.flatnonzero(np.asarray(errors, dtype=float) <= target + TOLERANCE)
    return int(hits[0]) if len(hits) else None


def time_to_target(xs: Sequence[float], errors: Sequence[float], target: float) -> float:
    """x at the first evaluation whose error is <= target; NaN if never reached.

    No interpolation: runs are evaluated at epoch ends, and the time a run has actually spent
    when it is first seen below the target is what a user would wait.
    """
    i = reach_index(errors, target)
    return float(np.asarray(xs, dtype=float)[i]) if i is not None else math.nan


def final_errors(df: pd.DataFrame) -> pd.Series:
    """Each run's test error at its last recorded epoch, indexed by run."""
    df = prepare(df)
    return df.groupby("run")["test_error"].last()


def config_final_error(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: mean, min and max over seeds of the final test error."""
    df = prepare(df)
    finals = final_errors(df)
    run_cfg = df.groupby("run")["config"].first()
    per = pd.DataFrame({"config": run_cfg, "final": finals})
    g = per.groupby("config")["final"]
    return pd.DataFrame({"final_mean": g.mean(), "final_min": g.min(), "final_max": g.max()})


def baseline_final(df: pd.DataFrame) -> pd.Series:
    """Per group: Traditional's final test error, averaged over its seeds (NaN-free; groups
    without Traditional runs are absent)."""
    df = prepare(df)
    base = df[df["sampler"] == BASELINE]
    if base.empty:
        return pd.Series(dtype=float)
    finals = final_errors(base)
    run_group = base.groupby("run")["group"].first()
    return finals.groupby(run_group).mean()


def targets(df: pd.DataFrame, ks: Iterable[float]) -> pd.DataFrame:
    """Per group and k: the target error k x Traditional's final error. Columns group, k, target."""
    base = baseline_final(df)
    rows = [{"group": g, "k": k, "target": k * e} for g, e in base.items() for k in ks]
    return pd.DataFrame(rows, columns=["group", "k", "target"])


def split(df: pd.DataFrame, key: str) -> List[tuple[str, pd.DataFrame]]:
    """(key value, rows) pairs in first-seen order of the prepared table."""
    df = prepare(df)
    return [(k, df[df[key] == k]) for k in dict.fromkeys(df[key])]


def experiment_title(r) -> str:
    """'mnist / cnn' plus the experiment's extra overrides on wrapped lines, for figure titles."""
    head = f"{r['dataset']} / {r['model']}"
    return head + ("\n" + textwrap.fill(str(r["setting"]), 90) if r.get("setting") else "")


def noise_title(noise) -> str:
    return f"label noise {style.pct(noise)}"


def describe_group(r, with_noise: bool = True) -> str:
    """A short title for the experiment or group of a row: 'mnist / cnn, noise 10%'."""
    parts = [f"{r['dataset']} / {r['model']}"]
    if r.get("setting"):
        parts.append(str(r["setting"]))
    if with_noise:
        parts.append(noise_title(r["label_noise"]))
    return ", ".join(parts)


def per_experiment(df: pd.DataFrame) -> List[tuple[str, pd.DataFrame]]:
    """(file-name suffix, rows) per experiment; the suffix is empty when there is only one, so
    the common case gets plain names (time_to_accuracy.png)."""
    parts = split(df, "experiment")
    if len(parts) == 1:
        return [("", parts[0][1])]
    return [("_" + style.slug(describe_group(rows.iloc[0], with_noise=False)), rows) for _, rows in parts]


def noise_panels(df: pd.DataFrame) -> List[tuple[float, pd.DataFrame]]:
    """(label_noise, rows) in increasing noise order; missing noise counts as 0."""
    df = prepare(df)
    noise = df["label_noise"].fillna(0.0).astype(float)
    return [(n, df[noise == n]) for n in sorted(noise.unique())]

"""The baseline of each group, the target errors it sets, and when each seed reaches them.

- The baseline (`--baseline`, default Traditional) is one configuration per group (one experiment
  at one noise rate), named by its legend label, or by comma-separated terms that must all match:
  sampler names, parts of the label ('β=2') or of the configuration key ('selection_forward=eval').
  Two matches in one group are refused: averaging two configurations as one baseline would mix
  what the user asked to keep apart.
- target(k) = k × the baseline's final test error (its mean over seeds). A target above 100%
  error cannot be reached by anything and is no target (NaN): the baseline learned nothing.
- Each seed reaches a target where its error, interpolated linearly between its last evaluation
  above the target and its first at or below it, crosses the target (data.reach); its time, work
  and backprops there are interpolated alike. A seed that never gets there has no time (NaN), and
  tables count it instead of averaging it in.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Set

import pandas as pd

from . import data, stats, style

BASELINE = style.TRADITIONAL


class BaselineError(ValueError):
    """An unknown or ambiguous --baseline. The message is one line meant for the user."""


def _matches(members: pd.DataFrame, labels: Dict[str, str], spec: str, samplers: Set[str]) -> List[str]:
    """Configurations of one group that `spec` names: its exact label, or every comma-separated
    term matching (a sampler name matches the sampler; any other term is a case-insensitive part
    of the label or of the configuration key, e.g. 'β=2', 'selection_forward=eval')."""
    s = spec.strip().lower()
    exact = [c for c in members["config"] if labels[c].lower() == s]
    if exact:
        return exact
    terms = [t.strip() for t in s.split(",") if t.strip()]

    def named(r, t: str) -> bool:
        if t in samplers:
            return str(r["sampler"]).lower() == t
        return t in labels[r["config"]].lower() or t in r["config"].lower()
    return [r["config"] for _, r in members.iterrows() if terms and all(named(r, t) for t in terms)]


def _allowed(cfgs: pd.DataFrame, labels: Dict[str, str]) -> str:
    samplers = ", ".join(dict.fromkeys(cfgs["sampler"].astype(str)))
    names = "; ".join(dict.fromkeys(labels[c] for c in cfgs["config"]))
    return (f"allowed: a sampler name ({samplers}), a configuration's label or part of one ({names}), or such "
            f"parts joined by commas (e.g. 'traditional,selection_forward=eval')")


def choose(df: pd.DataFrame, spec: str = BASELINE, required: bool = False) -> Dict[str, str]:
    """{group: baseline configuration key} for the groups where `spec` names one configuration.

    BaselineError if it names several in one group, or (with `required`, i.e. the user gave it)
    none in any group. Groups without a match have no baseline and no speedups."""
    cfgs = data.configs(df)
    labels = style.config_labels(cfgs, within="group")
    samplers = set(style.FAMILIES) | {str(s).lower() for s in cfgs["sampler"]}
    what = f"--baseline {spec!r}" + ("" if required else " (the default)")
    chosen = {}
    for group, members in cfgs.groupby("group", sort=False):
        hit = _matches(members, labels, spec, samplers)
        if len(hit) > 1:
            raise BaselineError(f"{what} is ambiguous in {data.describe_group(members.iloc[0])}: it matches "
                                f"{' and '.join(labels[c] for c in hit)}; {_allowed(members, labels)}")
        if hit:
            chosen[group] = hit[0]
    if required and not chosen:
        raise BaselineError(f"{what} matches no configuration; {_allowed(cfgs, labels)}")
    return chosen


def baseline_errors(df: pd.DataFrame, chosen: Dict[str, str]) -> Dict[str, stats.Summary]:
    """{group: the baseline's final test error over its seeds}."""
    runs = data.per_run(df)
    return {g: stats.summarize(runs.loc[runs["config"] == c, "final"]) for g, c in chosen.items()}


def target(k: float, baseline_error: float) -> float:
    """k × the baseline's final error; NaN when that is above 100% error (no target)."""
    t = k * baseline_error
    return t if t <= 1.0 else math.nan


def seed_reach(df: pd.DataFrame, goal: Dict[str, float], columns: Sequence[str]) -> pd.DataFrame:
    """Per run of the groups in `goal` ({group: target error}): the value of each of `columns`
    (train_time_s, work, ...) where it reaches its group's target, interpolated between
    evaluations (data.reach); NaN if it never gets there (or the target is NaN). Indexed by run,
    with config, group and seed."""
    df = data.prepare(df)
    rows = []
    for run, r in df[df["group"].isin(goal)].groupby("run", sort=False):
        first = r.iloc[0]
        t = goal[first["group"]]
        point = None if math.isnan(t) else data.reach(r["test_error"], t)
        rows.append({"run": run, "config": first["config"], "group": first["group"], "seed": first["seed"],
                     **{c: (data.at_reach(r[c], point) if c in r.columns else math.nan) for c in columns}})
    return pd.DataFrame(rows, columns=["run", "config", "group", "seed", *columns]).set_index("run")

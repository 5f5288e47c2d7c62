"""Collect run directories into one tidy table: one row per run-epoch, parameters as columns."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List

import pandas as pd

from . import records

PARAMS = ["dataset", "model", "sampler", "beta", "staleness", "selectivity", "label_noise", "seed",
          "batch_size", "epochs", "lr"]
RUNS_CSV = "runs.csv"
SWEEP_SUMMARY = "sweep_summary.json"


class NoRunsError(ValueError):
    """A path that holds no sbrun runs. The message is one line meant for the user."""


def find_runs(paths: Iterable[Path | str]) -> List[Path]:
    """Run directories (those with a summary.json) at or below each path, sorted, unique."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise NoRunsError(f"{p} does not exist; allowed: a run or multirun directory")
        if not p.is_dir():
            raise NoRunsError(f"{p} is not a directory; allowed: a run or multirun directory")
        hits = [p] if (p / records.SUMMARY).exists() else sorted(
            s.parent for s in p.rglob(records.SUMMARY) if "ckpt" not in s.parts)
        if not hits:
            raise NoRunsError(f"{p} holds no sbrun runs (no {records.SUMMARY} at or below it); allowed: a "
                              f"run or multirun directory written by sbrun")
        found += hits
    return sorted(set(found))


def load_run(run_dir: Path) -> pd.DataFrame:
    summary = records.read_json(run_dir / records.SUMMARY) or {}
    metrics = run_dir / records.METRICS
    df = pd.read_csv(metrics) if metrics.exists() and metrics.stat().st_size else pd.DataFrame()
    params = summary.get("params", {})
    for key in PARAMS:
        df[key] = params.get(key)
    df["status"] = summary.get("status")
    df["run"] = str(run_dir)
    # The command-line overrides, as a JSON list: they tell apart runs whose params agree
    # (model.width=16, a schedule, ...).
    df["overrides"] = json.dumps(summary.get("overrides") or [])
    return df


def merge_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    frames = [load_run(r) for r in find_runs(paths)]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise NoRunsError("the runs hold no finished epochs yet (every metrics.csv is empty)")
    df = pd.concat(frames, ignore_index=True)
    lead = ["run", "status"] + PARAMS
    return df[lead + [c for c in df.columns if c not in lead]]


def sweep_report(sweep_dir: Path) -> dict:
    """Which jobs of a sweep finished, failed or are unfinished, with the failures' reasons."""
    report = {"finished": [], "failed": [], "unfinished": []}
    for run in find_runs([sweep_dir]):
        s = records.read_json(run / records.SUMMARY) or {}
        status = s.get("status")
        name = str(run.relative_to(sweep_dir)) if run != sweep_dir else run.name
        if status == records.FINISHED:
            report["finished"].append(name)
        elif status == records.FAILED:
            report["failed"].append({"job": name, "reason": s.get("reason")})
        else:
            report["unfinished"].append({"job": name, "status": status})
    report["jobs"] = sum(len(v) for v in report.values())
    return report


def write_sweep_outputs(sweep_dir: Path) -> tuple:
    """sweep_summary.json and (once some epoch finished) runs.csv at the root of a sweep
    directory; returns (runs or None, report). NoRunsError if the sweep holds no run at all."""
    sweep_dir = Path(sweep_dir)
    report = sweep_report(sweep_dir)
    records.write_json(sweep_dir / SWEEP_SUMMARY, report)
    try:
        df = merge_runs([sweep_dir])
    except NoRunsError:
        return None, report
    records.atomic_write(sweep_dir / RUNS_CSV, df.to_csv(index=False).encode())
    return df, report

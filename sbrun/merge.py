"""Collect run directories into one tidy table: one row per run-epoch, parameters as columns.

Every key of a run's params (summary.json) becomes a column, and the params are also kept whole as
JSON in `params`, so the figures can tell which columns name a configuration. A run whose records
cannot be trusted (unreadable summary.json; metrics.csv missing, garbled or shorter than the
epochs summary.json says were completed) is skipped with one line naming the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from . import records
from .messages import one_line

log = logging.getLogger("sbrun")

# The params every run records, listed first (older runs have only these).
PARAMS = ["dataset", "model", "sampler", "beta", "staleness", "selectivity", "label_noise", "seed",
          "batch_size", "epochs", "lr"]
REQUIRED = ["epoch", "test_error"]   # what every figure reads from metrics.csv
RUNS_CSV = "runs.csv"
SWEEP_SUMMARY = "sweep_summary.json"


class NoRunsError(ValueError):
    """A path that holds no sbrun runs. The message is one line meant for the user."""


class RunProblem(ValueError):
    """A run directory whose records cannot be used: '<file>: <what is wrong>' on one line."""


def find_runs(paths: Iterable[Path | str]) -> List[Path]:
    """Run directories (those with a summary.json) at or below each path, sorted, unique."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise NoRunsError(f"{p} does not exist; allowed: a run or multirun directory")
        if not p.is_dir():
            raise NoRunsError(f"{p} is not a directory; allowed: a run or multirun directory")
        hits = [p] if (p / records.SUMMARY).exists() else outermost(
            s.parent for s in p.rglob(records.SUMMARY) if "ckpt" not in s.parts)
        if not hits:
            raise NoRunsError(f"{p} holds no sbrun runs (no {records.SUMMARY} at or below it); allowed: a "
                              f"run or multirun directory written by sbrun")
        found += hits
    return sorted(set(found))


def outermost(dirs: Iterable[Path]) -> List[Path]:
    """Run directories that are not inside another run directory: a sampler's own sub-run
    (RHO-LOSS's irreducible-loss model in <run>/irreducible/) belongs to its run, not the sweep."""
    dirs = sorted(set(dirs))
    found = set(dirs)
    return [d for d in dirs if not any(a in found for a in d.parents)]


def read_metrics(path: Path, completed: int) -> pd.DataFrame:
    """metrics.csv as a table, checked against the epochs its summary.json says were completed.
    RunProblem if it is missing, not a metrics table, or holds fewer complete epoch rows."""
    if not path.exists() or not path.stat().st_size:
        if completed > 0:
            state = "missing" if not path.exists() else "empty"
            raise RunProblem(f"{path}: {state}, but {records.SUMMARY} says {completed} epoch(s) completed")
        return pd.DataFrame()
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:   # EmptyDataError is a ValueError
        raise RunProblem(f"{path}: not a metrics table ({one_line(err, limit=120)})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise RunProblem(f"{path}: not a metrics table (no {' or '.join(missing)} column)")
    numeric = df[REQUIRED].apply(pd.to_numeric, errors="coerce")
    complete = int(numeric.notna().all(axis=1).sum())
    if complete < completed:
        raise RunProblem(f"{path}: truncated, {complete} complete epoch row(s) but {records.SUMMARY} says "
                         f"{completed} epoch(s) completed")
    if complete < len(df):
        raise RunProblem(f"{path}: not a metrics table ({len(df) - complete} row(s) without a numeric epoch "
                         f"and test_error)")
    df[REQUIRED] = numeric
    return df


def _completed(summary: dict) -> int:
    """The epoch rows metrics.csv must hold: none to count on an evaluation grid (eval.every),
    whose rows sit at compute points, not at epoch ends."""
    if ((summary.get("config") or {}).get("eval") or {}).get("every") is not None:
        return 0
    done = summary.get("epochs_completed")
    return int(done) if isinstance(done, (int, float)) and done == done else 0


def _cell(v):
    """A params value as a table cell: lists and dicts as JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def load_run(run_dir: Path) -> pd.DataFrame:
    """The run's metrics with its params as columns; empty if it has no finished epoch yet.
    RunProblem if its summary.json or metrics.csv cannot be used."""
    run_dir = Path(run_dir)
    summary = records.read_json(run_dir / records.SUMMARY)
    if not isinstance(summary, dict):
        raise RunProblem(f"{run_dir / records.SUMMARY}: unreadable (not a JSON object)")
    df = read_metrics(run_dir / records.METRICS, _completed(summary))
    params = summary.get("params") or {}
    for key in PARAMS + sorted(k for k in params if k not in PARAMS):
        df[key] = _cell(params.get(key))
    df["status"] = summary.get("status")
    df["run"] = str(run_dir)
    # The command-line overrides, as a JSON list: they tell apart runs whose params agree
    # (model.width=16, a schedule, ...). The params, whole: which columns are params.
    df["overrides"] = json.dumps(summary.get("overrides") or [])
    df["params"] = json.dumps(params, sort_keys=True, default=str)
    df["run_mtime"] = (run_dir / records.SUMMARY).stat().st_mtime   # "most recent" among duplicates
    return df


def merge_runs(paths: Iterable[Path | str], problems: Optional[List[str]] = None) -> pd.DataFrame:
    """Every usable run at or below the paths, merged. A run that cannot be used is skipped, its
    one-line reason appended to `problems` (or logged when no list is given). NoRunsError if no
    run has a finished epoch."""
    frames, skipped = [], []
    for run in find_runs(paths):
        try:
            frame = load_run(run)
        except RunProblem as err:
            skipped.append(str(err))
            continue
        if len(frame):
            frames.append(frame)
    if problems is not None:
        problems.extend(skipped)
    else:
        for line in skipped:
            log.warning("%s; run skipped", line)
    if not frames:
        if skipped:
            raise NoRunsError(f"no usable run: {len(skipped)} skipped for bad records, the others (if any) have no "
                              f"finished epoch")
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

"""What every experiment tracker implements, and the pure conversions they share.

A tracker is built from its `logger.<name>` config node (the settings are its keyword arguments),
then `start`ed once per process. The heavy client package (tensorboard, wandb, mlflow) is imported
inside `start`, never at module import, so choosing no tracker costs nothing.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..config import ConfigError

# The run statuses the runner reports (sbrun.records), the only values `finish` accepts.
STATUSES = ("finished", "failed", "stopped")


class TrackerUnavailable(ConfigError):
    """A selected tracker cannot be used (its package is missing, or it failed to start).
    One line meant for the user; a ConfigError, so the CLI exits with status 2."""


@dataclass(frozen=True)
class RunInfo:
    """What a tracker is told about the run it records."""
    run_dir: Path
    config: Dict[str, Any]          # the resolved config, plain containers
    run_name: str
    # Last step already sent to the trackers by an earlier process of this run; None for a new run.
    resume_step: Optional[int] = None

    @property
    def resumed(self) -> bool:
        return self.resume_step is not None


class Tracker:
    """Base class. `package` is the module that must be importable, `extra` the sbrun extra that
    installs it (the preflight names both)."""
    package: Optional[str] = None
    extra: Optional[str] = None

    def start(self, run: RunInfo, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Open a new tracker run, or continue the one described by `saved` (what an earlier
        `start` returned). Returns what must be stored to continue this tracker run later."""
        return {}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        pass

    def finish(self, status: str, artifacts: List[Path]) -> None:
        pass


class CsvTracker(Tracker):
    """`logger=csv`: metrics.csv, summary.json and the figures, which every run writes anyway.
    It exists so that `csv` can be selected, alone or next to other trackers."""


def numeric_metrics(row: Mapping[str, Any]) -> Dict[str, float]:
    """The loggable part of a metrics row: real numbers (bools as 0/1), without NaN, which
    every tracker would either reject or plot as a gap."""
    out = {}
    for key, value in row.items():
        if isinstance(value, numbers.Real):
            value = float(value)
            if not math.isnan(value):
                out[str(key)] = value
    return out


def plain_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config as JSON types only (paths, enums and the like as text), which every tracker
    client serialises without surprises."""
    return json.loads(json.dumps(dict(config), default=str))


def flat_params(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested config -> {"model.width": 32, ...}. Leaves stay bool/int/float/str; None and lists
    become their JSON text ("null", "[0.5]"), the one form TensorBoard hparams and MLflow
    params both accept."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def artifact_files(paths: Iterable[Path]) -> List[Path]:
    """The files among `paths` (directories expanded, missing paths dropped: plots=false writes
    no figures), in a stable order."""
    files: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(p)
    return files


def relative_to_run(path: Path, run_dir: Path) -> Optional[Path]:
    """`path` relative to the run directory, or None when it lies elsewhere."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    return path.relative_to(run_dir) if path.is_relative_to(run_dir) else None


def is_image(path: Path) -> bool:
    return path.suffix.lower() == ".png"

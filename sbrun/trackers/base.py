"""A tracker is a callback on the run's hooks (on_start, on_epoch, on_end) around three client calls
a subclass implements: start, log_metrics, finish. It is built from its `logger.<name>` node (the
settings are its constructor's arguments, which only check and store them); the client package is
imported in `start`, so choosing no tracker costs nothing.

Trackers are a side channel: metrics.csv and summary.json stay the record of a run. So a tracker that
breaks mid-run (network, quota, full disk) is reported once and goes quiet while training goes on;
one that cannot start stops the run before any training. Only rank 0 tracks: metrics are global.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..config import ConfigError
from ..hooks import RunInfo
from ..messages import one_line
from ..records import COUNTS, METRICS, SUMMARY, read_json, write_json

log = logging.getLogger("sbrun")

# In the run directory: per tracker, what its `start` returned (run ids) and the last step it holds.
STATE_FILE = "trackers.json"
STATUSES = ("finished", "failed", "stopped")


class TrackerUnavailable(ConfigError):
    """A selected tracker's package is missing, or it failed to start: one line, exit status 2."""


class Tracker:
    package: Optional[str] = None   # the module that must be importable,
    extra: Optional[str] = None     # and the sbrun extra that installs it
    name = "tracker"                # its option in `logger`, set by `build`
    run_dir: Optional[Path] = None  # while tracking
    step = 0                        # the last step (epoch) this tracker's run holds

    def start(self, run: RunInfo, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Open a tracker run, or continue the one `saved` (an earlier start's return) describes;
        return what continuing this one later needs."""
        return {}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        pass

    def finish(self, status: str, artifacts: List[Path]) -> None:
        pass

    # --- the hook callbacks --------------------------------------------------------------------
    def on_start(self, run: RunInfo) -> None:
        if run.rank != 0:
            return
        states = read_json(Path(run.run_dir) / STATE_FILE) or {}
        saved = states.get(self.name)
        # trackers.json before per-tracker steps held one shared "last_step"
        self.step = int(saved.get("last_step", states.get("last_step", 0))) if saved else 0
        try:
            self.state = self.start(run, saved)
        except Exception as err:
            raise TrackerUnavailable(f"logger={self.name} could not start: {one_line(err)}") from None
        self.run_dir = Path(run.run_dir)
        self._save()

    def on_epoch(self, row: Mapping[str, Any]) -> None:
        step = int(row["epoch"])
        if self.run_dir is None or step <= self.step:   # a resumed run replays steps already sent
            return
        if self._guarded(self.log_metrics, numeric_metrics(row), step):
            self.step = step
            self._save()

    def on_end(self, status: str, summary: Dict) -> None:
        if status not in STATUSES:
            raise ValueError(f"status={status!r}; allowed: {', '.join(STATUSES)}")
        if self.run_dir is not None:
            self._guarded(self.finish, status, artifacts(self.run_dir))
            self.run_dir = None

    def _guarded(self, method, *args) -> bool:
        try:
            method(*args)
            return True
        except Exception as err:   # a tracker must not end a run its CSVs still record
            log.warning("tracker %s stopped (%s: %s); metrics.csv and summary.json still record the run",
                        self.name, type(err).__name__, one_line(err))
            self.run_dir = None
            return False

    def _save(self) -> None:
        path = self.run_dir / STATE_FILE
        write_json(path, {**(read_json(path) or {}), self.name: {**self.state, "last_step": self.step}})


def build(logger: Optional[Mapping]) -> List[Tracker]:
    """The trackers the `logger` node selects (a null option is none), named after their options;
    a bad setting is a ConfigError and a missing client package a TrackerUnavailable, one line each."""
    from ..components import instantiate

    trackers = list(instantiate(logger, "logger", Tracker).items())
    for name, tracker in trackers:
        if tracker.package and importlib.util.find_spec(tracker.package) is None:
            raise TrackerUnavailable(f"logger={name} needs the {tracker.package} package; install it "
                                     f"with pip install 'sbrun[{tracker.extra}]'")
        tracker.name = name
    return [t for _, t in trackers]


def artifacts(run_dir: Path) -> List[Path]:
    """What a tracker gets when the run ends: the figures, then the tables that exist."""
    tables = [run_dir / n for n in (COUNTS, SUMMARY, METRICS)]
    return sorted((run_dir / "figures").glob("*.png")) + [p for p in tables if p.is_file()]


def numeric_metrics(row: Mapping[str, Any]) -> Dict[str, float]:
    """The loggable part of a metrics row: real numbers (bools as 0/1) but NaN, which every
    tracker would reject or plot as a gap."""
    return {str(k): float(v) for k, v in row.items() if isinstance(v, numbers.Real) and not math.isnan(v)}


def flat_params(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested config -> {"model.width": 32, ...}. Leaves stay bool/int/float/str; None and lists
    become their JSON text ("null", "[0.5]"), the one form TensorBoard hparams and MLflow
    params both accept."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            ok = isinstance(value, (bool, int, float, str))
            out[f"{prefix}{key}"] = value if ok else json.dumps(value, default=str)
    return out

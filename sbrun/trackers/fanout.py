"""The `logger` config group: choose trackers, check them before training, and fan each epoch out.

`logger_cfg` is the composed `logger` node: {option name: {"_target_": class path, **settings}}.
Trackers are a side channel: metrics.csv and summary.json stay the record of a run. So a tracker
that breaks in the middle of a run (network, quota, full disk) is reported once and dropped, and
the training goes on; one that cannot start stops the run before any training.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ..config import ConfigError
from ..messages import one_line
from .base import (
    STATUSES,
    CsvTracker,
    RunInfo,
    Tracker,
    TrackerUnavailable,
    artifact_files,
    numeric_metrics,
    plain_config,
)

log = logging.getLogger("sbrun")

STATE_FILE = "trackers.json"   # in the run directory: tracker run ids and the last step sent
LAST_STEP = "last_step"


def _plain(logger_cfg) -> Dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if logger_cfg is None:
        return {}
    if isinstance(logger_cfg, DictConfig):
        return OmegaConf.to_container(logger_cfg, resolve=True)
    if not isinstance(logger_cfg, Mapping):
        raise ConfigError(f"logger={logger_cfg!r} is invalid; allowed: csv, tensorboard, wandb, mlflow "
                          "or a list of them, e.g. logger=[csv,tensorboard]")
    return dict(logger_cfg)


def _load_class(name: str, target: Any) -> Type[Tracker]:
    module_name, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Tracker)):
        raise ConfigError(f"logger.{name}._target_={target!r} is not a tracker class; allowed: "
                          "sbrun.trackers.<module>.<Tracker subclass>, e.g. "
                          "sbrun.trackers.tensorboard.TensorBoardTracker")
    return cls


def _settings_error(name: str, cls: Type[Tracker], settings: Dict[str, Any]) -> Optional[str]:
    params = inspect.signature(cls).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(k for k in settings if k not in params)
    if unknown:
        return (f"logger.{name}.{unknown[0]} is not a setting of {cls.__name__}; allowed: "
                f"{', '.join(allowed) or 'none'}")
    return None


def selected(logger_cfg) -> List[Tuple[str, Tracker]]:
    """(option name, tracker) of every selected tracker, built from its settings (constructors
    only check and store them). Imports only sbrun's own light tracker modules. A `null` option
    (logger.wandb=null) is skipped."""
    out = []
    for name, node in _plain(logger_cfg).items():
        if node is None:
            continue
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"logger.{name} is invalid; allowed: a mapping with a _target_ "
                              "tracker class and its settings (see conf/logger/)")
        settings = {k: v for k, v in node.items() if k != "_target_"}
        cls = _load_class(name, node["_target_"])
        err = _settings_error(name, cls, settings)
        if err:
            raise ConfigError(err)
        try:
            out.append((str(name), cls(**settings)))
        except ValueError as bad:       # constructors name the setting: "mode='x' is invalid; ..."
            raise ConfigError(f"logger.{name}.{one_line(bad)}") from None
    return out


def _check_packages(chosen: List[Tuple[str, Tracker]]) -> None:
    for name, tracker in chosen:
        if tracker.package and importlib.util.find_spec(tracker.package) is None:
            raise TrackerUnavailable(f"logger={name} needs the {tracker.package} package; install it "
                                     f"with pip install 'sbrun[{tracker.extra}]'")


def check_trackers(logger_cfg) -> None:
    """Preflight: a bad tracker setting is a ConfigError, a missing client package a
    TrackerUnavailable naming the extra, each one line. Imports no client package."""
    _check_packages(selected(logger_cfg))


class Trackers:
    """The fan-out the training loop talks to. Steps are epochs; a step at or below the last
    one already sent (a resumed run replays from its checkpoint) is not sent again, so no
    tracker holds a step twice."""

    def __init__(self, trackers: Optional[Dict[str, Tracker]] = None, state_path: Optional[Path] = None,
                 state: Optional[Dict[str, Any]] = None):
        self.trackers: Dict[str, Tracker] = dict(trackers or {})
        self.state_path = state_path
        self.state: Dict[str, Any] = dict(state or {})
        self.finished = False

    @property
    def names(self) -> List[str]:
        return list(self.trackers)

    def _call(self, name: str, method: str, *args) -> None:
        try:
            getattr(self.trackers[name], method)(*args)
        except Exception as err:   # a tracker must not end a run its CSVs still record
            log.warning("tracker %s stopped (%s: %s); metrics.csv and summary.json still record the run",
                        name, type(err).__name__, one_line(err))
            del self.trackers[name]

    def log_epoch(self, row: Mapping[str, Any], step: int) -> None:
        if not self.trackers or step <= self.state.get(LAST_STEP, 0):
            return
        metrics = numeric_metrics(row)
        for name in list(self.trackers):
            self._call(name, "log_metrics", metrics, int(step))
        self.state[LAST_STEP] = int(step)
        self._save()

    def finish(self, status: str, artifacts: List[Path] = ()) -> None:
        if status not in STATUSES:
            raise ValueError(f"status={status!r}; allowed: {', '.join(STATUSES)}")
        if self.finished:
            return
        self.finished = True
        files = artifact_files(artifacts)
        for name in list(self.trackers):
            self._call(name, "finish", status, files)

    def _save(self) -> None:
        if self.state_path is not None:
            from ..records import write_json  # atomic; imported here as it loads torch

            write_json(self.state_path, self.state)


def open_trackers(logger_cfg, run_dir: Path, config: Dict[str, Any], run_name: str,
                  enabled: bool = True) -> Trackers:
    """Start every selected tracker (continuing its earlier run when run_dir/trackers.json says
    there was one) and record their ids. enabled=False (DDP ranks > 0) returns a fan-out that
    logs nothing and writes nothing."""
    if not enabled:
        return Trackers()
    chosen = selected(logger_cfg)
    _check_packages(chosen)
    chosen = [(n, t) for n, t in chosen if not isinstance(t, CsvTracker)]
    if not chosen:                      # csv only: nothing to start, nothing to record
        return Trackers()
    from ..records import read_json

    state_path = Path(run_dir) / STATE_FILE
    saved = read_json(state_path) or {}
    run = RunInfo(Path(run_dir), plain_config(config), str(run_name),
                  resume_step=saved.get(LAST_STEP) if saved else None)
    state: Dict[str, Any] = {LAST_STEP: run.resume_step or 0}
    started: Dict[str, Tracker] = {}
    for name, tracker in chosen:
        try:
            state[name] = tracker.start(run, saved.get(name))
        except Exception as err:
            for other in started.values():    # no half-open runs or client processes; resumable
                try:
                    other.finish("stopped", [])
                except Exception:
                    pass
            raise TrackerUnavailable(f"logger={name} could not start: {one_line(err)}") from None
        started[name] = tracker
    fan = Trackers(started, state_path, state)
    fan._save()
    return fan

"""Experiment trackers (the `logger` config group): TensorBoard, Weights & Biases, MLflow.

    check_trackers(cfg["logger"])                      # preflight: one line if a package is missing
    trackers = open_trackers(cfg["logger"], run_dir, config, run_name, enabled=rank == 0)
    trackers.log_epoch(row, step=epoch)                # every metrics.csv row
    trackers.finish("finished", [figures, counts, summary, metrics])

Only sbrun's own small modules load here; each client package is imported when its tracker starts.
"""
from .base import RunInfo, Tracker, TrackerUnavailable
from .fanout import STATE_FILE, Trackers, check_trackers, open_trackers

__all__ = ["RunInfo", "STATE_FILE", "Tracker", "TrackerUnavailable", "Trackers", "check_trackers",
           "open_trackers"]

"""Experiment trackers (the `logger` config group): TensorBoard, Weights & Biases, MLflow, each a
callback on the run's hooks (base.py). Only sbrun's own small modules load here; each client
package is imported when its tracker starts."""
from .base import STATE_FILE, Tracker, TrackerUnavailable, build

__all__ = ["STATE_FILE", "Tracker", "TrackerUnavailable", "build"]

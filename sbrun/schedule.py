"""Learning-rate schedules as pure functions of the training position."""
from __future__ import annotations

import bisect
import math
from typing import Sequence

from .config import ScheduleConfig


def multistep_lr(position: float, base: float, milestones: Sequence[float], gamma: float) -> float:
    """base * gamma ** (number of milestones <= position).

    `position` is in epochs: by default the epochs of data passed through selection (what the SB
    authors' runs used); with schedule.by=backprops, backpropagated examples / training-set size.
    """
    return base * gamma ** bisect.bisect_right(list(milestones), position)


def step_gamma(cfg: ScheduleConfig) -> float:
    """schedule=step's factor per milestone; null gamma lands exactly on final_lr_frac."""
    if cfg.gamma is not None:
        return cfg.gamma
    return cfg.final_lr_frac ** (1.0 / len(cfg.milestones))


def relative_lr(frac: float, base: float, cfg: ScheduleConfig) -> float:
    """step / linear / cosine at `frac` of the run (0 = start, 1 = the budget is spent).

    linear and cosine reach final_lr_frac * base exactly at frac = 1; step multiplies by gamma at
    each milestone fraction (with gamma null, the last milestone lands on final_lr_frac * base).
    """
    frac = min(1.0, max(0.0, frac))
    low = cfg.final_lr_frac
    if cfg.name == "linear":
        return base * (1.0 - (1.0 - low) * frac)
    if cfg.name == "cosine":
        return base * (low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if cfg.name == "step":
        return multistep_lr(frac, base, cfg.milestones, step_gamma(cfg))
    raise ValueError(f"not a relative schedule: {cfg.name}")


def learning_rate(cfg: ScheduleConfig, base: float, epoch: int, backprop_epochs: float, frac: float) -> float:
    """The schedule's lr: multistep reads the absolute position (epoch index, or backprops / N),
    the others the fraction of the run; within `warmup` (a fraction of the run) it ramps up
    linearly from 0 (Goyal et al. 2017's gradual warm-up for large batches)."""
    ramp = min(1.0, frac / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.name == "multistep":
        position = epoch if cfg.by == "epochs" else backprop_epochs
        return ramp * multistep_lr(position, base, cfg.milestones, cfg.gamma)
    return ramp * relative_lr(frac, base, cfg)


def scaled_lr(lr: float, batch_size: int, batch_ref) -> float:
    """The linear scaling rule: lr x global batch / batch_ref (batch_ref null: lr unchanged)."""
    return lr if batch_ref is None else lr * batch_size / batch_ref


def lr_drop_epochs(cfg: ScheduleConfig, run_epochs: float) -> list:
    """Where the lr drops, in epochs (for samplers that follow the schedule, e.g. KAKURENBO):
    multistep's milestones, step's fractions scaled to the run; none for linear/cosine."""
    if cfg.name == "multistep":
        return list(cfg.milestones)
    if cfg.name == "step":
        return [m * run_epochs for m in cfg.milestones]
    return []

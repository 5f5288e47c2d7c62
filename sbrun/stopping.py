"""When a run stops: one decision, `should_stop`, made at every boundary of the loop.

A run stops when its length is spent (EPOCHS without `budget.amount`, else BUDGET; an epochs
length between chunks, the other units after any step), when its `hours` cap is crossed (HOURS,
at an epoch's end; crossed within the first epoch it is a configuration error, raised by the
loop), or when a stop signal arrived (SIGNAL, between two chunks: the run checkpoints and exits
with status 3). Every rank must decide the same: counters are equal on all ranks, while a
signal and each rank's own clock reach the others through a collective. Between chunks those
ride the chunk's one gather (loop.train_chunk), which returns them as `Flags`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .budget import Usage

if TYPE_CHECKING:
    from .build import Parts


class Stop(enum.Enum):
    """Whether the run stops, and why (the value is summary.json's stop_reason)."""
    NO = "no"
    EPOCHS = "epochs"      # `epochs` done (no budget.amount)
    BUDGET = "budget"      # budget.amount spent
    HOURS = "hours"        # the `hours` cap crossed
    SIGNAL = "signal"      # SIGINT, SIGTERM or SIGUSR2 on some rank


class At(enum.Enum):
    """Where in the loop the decision is taken."""
    STEP = "step"              # after a training step
    CHUNK = "chunk"            # before a chunk: after the previous one, or on entering the epoch
    EPOCH_END = "epoch_end"    # after the epoch's last chunk, before the epoch closes
    EPOCH = "epoch"            # before an epoch starts


@dataclass(frozen=True)
class Flags:
    """What a walked chunk leaves for the decision after it."""
    step: Stop = Stop.NO        # one of its steps spent the run's length (the rest of the chunk was skipped)
    signal: bool = False        # some rank's stop flag was up at the chunk's gather
    over_hours: bool = False    # some rank was past `hours` within the first epoch, at the gather


NO_FLAGS = Flags()


def should_stop(p: Parts, u: Usage, at: At, flags: Flags = NO_FLAGS) -> Stop:
    """Whether the run stops at `at`, having spent `u`, and why. In order: a step that spent the
    run's length, the first epoch past `hours`, a signal, the `hours` cap at an epoch boundary, the
    run's length. After the epoch's last chunk only the first two: the epoch closes (its flush
    step checks the length itself), and a signal stops the run inside the next epoch."""
    if flags.step is not Stop.NO:
        return flags.step
    if flags.over_hours:
        return Stop.HOURS
    if at is At.EPOCH_END:
        return Stop.NO
    if flags.signal:
        return Stop.SIGNAL
    if at is At.EPOCH and hours_crossed(p, u):
        return Stop.HOURS
    if at is At.STEP and p.meter.unit == "epochs":     # epochs are spent only between chunks
        return Stop.NO
    if not length_spent(p, u):
        return Stop.NO
    return Stop.EPOCHS if p.cfg.budget.amount is None else Stop.BUDGET


def length_spent(p: Parts, u: Usage) -> bool:
    """Whether the run's length is spent at `u`. Every unit but seconds is a host count equal on
    all ranks; seconds are each rank's own clock, so the ranks agree through one reduction."""
    spent = p.meter.spent(u)
    return p.dist.any(spent) if p.meter.unit == "seconds" else spent


def hours_crossed(p: Parts, u: Usage) -> bool:
    """Whether any rank's training time has reached the `hours` cap (a collective where one is set)."""
    return p.cfg.hours is not None and p.dist.any(u.seconds >= p.cfg.hours * 3600)


def past_hours_in_first_epoch(p: Parts, epoch: int, seconds: float) -> bool:
    """This rank's flag for the chunk's gather: still in the first epoch, and past `hours` (its
    `seconds` so far count those before a resume or a grid evaluation's pause)."""
    return p.cfg.hours is not None and epoch == 0 and seconds > p.cfg.hours * 3600

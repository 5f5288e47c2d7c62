"""Evaluation on a common compute grid (`eval.every`, `eval.unit`).

With a grid, a run evaluates each time its usage in the grid's unit crosses the next multiple of
`eval.every` (decided after each step in loop.train_step, on host counters), and once more when it
ends; epoch ends write no rows. A method with cheaper epochs is then evaluated at the same compute
points as the others, not more often. Each row holds the run's cumulative counters at its point;
its per-interval columns (train loss, backprop fraction, phase seconds) cover the stretch since the
previous row, which may span epoch ends: the counters of completed epochs wait in `run.pending`,
the current epoch's counters at the last row in `ep.mark`. Both are checkpointed, so a resumed
run writes the same rows.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Dict

from . import outputs, state
from .budget import Usage
from .evaluate import recalibrate_bn, scores
from .state import EpochState, RunState

if TYPE_CHECKING:
    from .build import Parts


def due(p: Parts, run: RunState, u: Usage) -> bool:
    """Whether `u` has crossed a grid point not yet evaluated."""
    return p.grid is not None and p.grid.passed(u) > run.evals


def evaluate_now(p: Parts, run: RunState, ep: EpochState, u: Usage, hooks) -> None:
    """A grid row in the middle of an epoch, at usage `u`. The epoch's clock pauses (its seconds so
    far move to ep.phases), so evaluation time stays out of train_time_s."""
    for k, v in p.timer.end_epoch().items():
        ep.phases[k] = ep.phases.get(k, 0.0) + v
    fold(p, run, ep, ep.phases, u.epochs - run.epoch)
    seconds = run.totals["train_time"] + ep.phases["total"]
    write_row(p, run, dataclasses.replace(u, seconds=seconds), state.counted(run, ep)["steps"], hooks)
    p.timer.start_epoch()


def end_epoch(p: Parts, run: RunState, ep: EpochState, phases: Dict[str, float], extra: Dict[str, float]) -> None:
    """An epoch end on a grid: no row; its counters since its last row wait for the next one."""
    run.extra = dict(extra)
    fold(p, run, ep, phases, ep.walked())


def final_row(p: Parts, run: RunState, u: Usage, steps: int, hooks) -> None:
    """The row at the run's end, unless the last grid row was taken at this very point."""
    last = run.rows[-1] if run.rows else None
    if last is not None and (last["backprops"], last["select_forwards"]) == (u.backprops, u.select_forwards):
        return
    write_row(p, run, u, steps, hooks)


def fold(p: Parts, run: RunState, ep: EpochState, phases: Dict[str, float], walked: float) -> None:
    """Move what `ep` counted since its mark into `run.pending` (a collective)."""
    now = outputs.epoch_counters(p, ep, phases, walked)
    run.pending = {k: run.pending.get(k, 0.0) + v - ep.mark.get(k, 0.0) for k, v in now.items()}
    ep.mark = now


def write_row(p: Parts, run: RunState, u: Usage, steps: int, hooks) -> None:
    """Evaluate (after re-estimating batch-norm statistics, seeded by the row's index) and write
    the row whose interval is `run.pending`."""
    if p.cfg.bn_recalibrate:
        recalibrate_bn(p, len(run.rows))
    interval = {k: run.pending.get(k, 0.0) for k in outputs.INTERVAL_KEYS}
    row = outputs.metrics_row(p, run, u, u.epochs, steps, interval, scores(p), run.extra,
                              time.perf_counter() - run.clock0)
    run.pending = {}
    run.evals = p.grid.passed(u)
    outputs.record_row(p, run, row, hooks)

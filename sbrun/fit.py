"""A run from its current state to its end: epochs, evaluation, checkpoints, budget and stops.

A run ends when its length is spent (`epochs`, or `budget.amount` in its unit, possibly
mid-epoch), when its `hours` cap is crossed at an epoch end, or when a stop signal arrives
(SIGINT, SIGTERM, SIGUSR2: checkpoint, status stopped, exit 3); stopping.should_stop decides,
here between epochs and in the loop within them.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Dict, Optional

import torch

from . import grid, outputs, records
from . import state as run_state
from .evaluate import recalibrate_bn, scores
from .hooks import Hooks
from .loop import capture_streams, run_epoch, score, train_forward, usage
from .state import EpochState, RunState
from .stopping import At, Stop, should_stop

if TYPE_CHECKING:
    from .build import Parts

log = logging.getLogger("sbrun")


class StopRequested(Exception):
    """A stop signal arrived; the run stopped cleanly after a checkpoint."""

    def __init__(self, message: str, signum: Optional[int] = None):
        super().__init__(message)
        self.signum = signum


class StopFlag:
    """Turns stop signals into a flag the loop checks between chunks.

    SIGINT (Ctrl-C), SIGTERM (plain pre-emption) and SIGUSR2 (SLURM's warning before a time limit
    or pre-emption, as the submitit launcher asks for) all mean: finish the current chunk (the
    next one too when the flag rises after the chunk's gather, which carries it to every rank),
    write a checkpoint, exit with status 3. SIGTERM is left alone where a launcher already handles it
    (submitit ignores it and waits for SIGUSR2); SIGUSR2 is passed on afterwards (cli.pass_on),
    so submitit still requeues the job, which then resumes from the checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}

    def __enter__(self):
        self._pid = os.getpid()
        for sig in self.SIGNALS:
            try:
                current = signal.getsignal(sig)
                if sig == signal.SIGTERM and callable(current):
                    continue
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread (e.g. a launcher's worker thread)
                pass
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:     # a forked DataLoader worker: the main process does the stopping
            return
        if self.signal is not None:      # a second signal: stop waiting
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: finishing the current batch, then checkpointing", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def fit(p: Parts, run: RunState, ep: Optional[EpochState], hooks: Hooks) -> Dict:
    """Train until the run's end and return its final summary. `ep` is the epoch in progress of a
    mid-epoch checkpoint, or None to start the next epoch afresh."""
    ep = ep or new_epoch(p, run.epoch)
    # Wall time runs on from the last checkpoint: a mid-epoch one carries its epoch's wall seconds.
    run.clock0 = time.perf_counter() - run.totals["wall_time"] - ep.phases.get("wall", 0.0)
    run.stop_reason = None
    outputs.write_summary(p, run, records.RUNNING)
    warmup_compile(p, run)
    with StopFlag() as flag:
        while (stop := should_stop(p, usage(p, run), At.EPOCH)) is Stop.NO:
            ended = run_epoch(p, run, ep, hooks, lambda: flag.signal is not None)
            phases = end_phases(p, ep)
            phases["wall"] = time.perf_counter() - run.clock0 - run.totals["wall_time"]   # this epoch's, so far
            if ended is Stop.SIGNAL:
                stop_now(p, run, ep, flag.signal, phases)
            if ended is not Stop.NO:
                # the run's length, spent mid-epoch: checkpointed before the evaluation touches
                # anything, so a larger budget continues here
                capture_streams(p, ep)
                ep.phases = phases
                run_state.save(p, run, ep, mid=True)
            wall = time.perf_counter() - run.clock0
            close_epoch(p, run, ep, phases, wall, hooks)
            if ended is not Stop.NO:
                stop = ended
                break
            outputs.fold_epoch(run, ep, phases, wall)
            # what still waits is carried (epoch_end=carry, or the remainder after the authors' final full step)
            ep = new_epoch(p, run.epoch, carried=ep.queue if len(ep.queue) else None)
            run_state.save(p, run, ep, mid=False)
            outputs.write_summary(p, run, records.RUNNING)
    if stop is Stop.HOURS:
        log.info("time cap of %g h reached after epoch %d", p.cfg.hours, run.epoch)
    if p.grid is not None:
        grid.final_row(p, run, usage(p, run, ep), run_state.counted(run, ep)["steps"], hooks)
    run.stop_reason = stop.value
    outputs.finish_outputs(p, run)
    final = outputs.write_summary(p, run, records.FINISHED)
    if final.get("warning"):
        log.warning("%s", final["warning"])
    hooks.call("on_end", records.FINISHED, final)
    return final


def new_epoch(p: Parts, epoch: int, carried=None) -> EpochState:
    """A fresh epoch; `carried` is the previous epoch's queue when the sampler carries it over."""
    ep = EpochState.new(epoch, p.local_batch, p.dist.rank, p.device)
    if carried is not None:
        ep.queue = carried
    return ep


def end_phases(p: Parts, ep: EpochState) -> Dict[str, float]:
    """The epoch's phase seconds, including those spent before a mid-epoch resume."""
    phases = p.timer.end_epoch()
    for k, v in ep.phases.items():
        phases[k] = phases.get(k, 0.0) + v
    return phases


def close_epoch(p: Parts, run: RunState, ep: EpochState, phases: Dict[str, float], wall: float, hooks: Hooks) -> None:
    """The sampler's end of epoch, then the epoch's row (evaluated after re-estimating batch-norm
    statistics when asked); on an evaluation grid no row: the epoch's counters wait for the next."""
    extra = p.sampler.end_epoch(ep.epoch)
    if p.grid is not None:
        grid.end_epoch(p, run, ep, phases, extra)
        return
    if p.cfg.bn_recalibrate:
        recalibrate_bn(p, ep.epoch)
    outputs.record_row(p, run, outputs.epoch_row(p, run, ep, phases, extra, scores(p), wall), hooks)


def stop_now(p: Parts, run: RunState, ep: EpochState, signum: Optional[int], phases: Dict[str, float]) -> None:
    """Checkpoint the epoch in progress and leave; `resume` continues from this chunk."""
    ep.phases = phases
    capture_streams(p, ep)
    run_state.save(p, run, ep, mid=True)
    outputs.finish_outputs(p, run)
    hint = {"resume_hint": f"sbrun resume={p.run_dir}"} if p.cfg.checkpoint.enabled else {}
    outputs.write_summary(p, run, records.STOPPED, stop_reason="signal", **hint)
    how = (f"continue with `sbrun resume={p.run_dir}`" if p.cfg.checkpoint.enabled else
           "checkpoint.enabled=false, so it cannot be continued")
    raise StopRequested(f"stopped by signal in epoch {ep.epoch + 1}; {how}", signum)


def warmup_compile(p: Parts, run: RunState) -> None:
    """Build the compiled train and scoring graphs outside the timed epochs, then undo the side
    effects (weights, batch-norm statistics, gradients)."""
    if not p.compiled or run.epoch > 0 or run.rows:
        return
    t0 = time.perf_counter()
    saved = {k: v.clone() for k, v in p.model.state_dict().items()}
    proxy = None if p.proxy is None else {k: v.clone() for k, v in p.proxy.model.state_dict().items()}
    p.stream.start_epoch(-1)
    x, y = next(iter(p.stream.chunks(max(p.chunk, p.local_batch)))).images()
    p.net.train()
    torch.nn.functional.cross_entropy(train_forward(p, x[:p.local_batch]).float(), y[:p.local_batch]).backward()
    p.optimizer.zero_grad(set_to_none=True)
    score(p, x[:p.chunk], y[:p.chunk])
    p.model.load_state_dict(saved)
    if proxy is not None:
        p.proxy.model.load_state_dict(proxy)
    if p.device.type == "cuda":
        torch.cuda.synchronize(p.device)
    p.compile_warmup_s = time.perf_counter() - t0

"""One epoch, top to bottom: chunk -> scoring forward -> sampler -> queue -> step.

Plain functions over the run's parts (build.Parts: model, optimizer, sampler, stream, ...) and
its explicit state (state.RunState, state.EpochState). The loop never looks at which sampler it
runs. Counters stay on the device and are read once per epoch; the only per-chunk host sync is
one small gather (how many examples each rank chose, since the queue must know when a full batch
waits, and the ranks' stop flags). Whether the run stops is decided by stopping.should_stop, on
host integers: it costs nothing and a resumed run stops at the same step.

A "chunk" is one selection batch of training indices (the object the stream yields); its
`chunk_size` is the number of indices, its `chunk_index` its position in the epoch.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import grid, proxy
from . import state as run_state
from .budget import Usage
from .build import scorer
from .config import ConfigError
from .hooks import Hooks, StepInfo
from .queue import Step
from .samplers import Ctx, Need, Observation
from .scaling import downsample
from .schedule import learning_rate, scaled_lr
from .seeding import generator
from .state import EpochState, RunState
from .stopping import NO_FLAGS, At, Flags, Stop, past_hours_in_first_epoch, should_stop

if TYPE_CHECKING:
    from .build import Parts

NAN_CHECK_EVERY = 64   # steps between host reads of the non-finite-loss flag


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def run_epoch(p: Parts, run: RunState, ep: EpochState, hooks: Hooks,
              stop_requested: Callable[[], bool] = lambda: False) -> Stop:
    """Train the epoch `ep` from its next chunk. Returns Stop.NO when every chunk was walked, else
    why it ended early: the run's length is spent (Stop.BUDGET), or a stop was requested on some
    rank (Stop.SIGNAL). The first epoch past `hours` raises a ConfigError."""
    start_epoch(p, run, ep)
    bar = tqdm(total=ep.n_chunks, initial=ep.chunk_index, desc=f"epoch {ep.epoch + 1}", leave=False,
               disable=p.bar_disabled, unit="batch")
    flags, last_steps = NO_FLAGS, 0   # last_steps: the last chunk's (the authors' partial step depends on it)
    try:
        chunks = p.stream.chunks(chunk_size(p, ep), ep.n_chunks, start=ep.chunk_index, visit=ep.visit)
        for chunk in itertools.chain(chunks, [None]):     # None: the boundary after the last chunk
            at = At.CHUNK if chunk is not None else At.EPOCH_END
            if (stop := should_stop(p, usage(p, run, ep), at, flags)) is not Stop.NO:
                return end_early(p, run, ep, stop, flags, hooks)
            if chunk is None:
                break
            before = ep.steps
            flags = train_chunk(p, run, ep, chunk, hooks, stop_requested)
            last_steps = ep.steps - before
            ep.chunk_index += 1
            bar.update(1)
        return close_chunks(p, run, ep, last_steps, hooks)
    finally:
        bar.close()
        if p.cfg.nan_check:
            check_finite(p, ep)


def end_early(p: Parts, run: RunState, ep: EpochState, stop: Stop, flags: Flags, hooks: Hooks) -> Stop:
    """Act on a stop between chunks. The run's length spent without a step spending it (an epochs
    length, or scoring work): with epoch_end=flush what waits becomes the run's last step, at the
    schedule's final lr; with carry it is never stepped nor counted."""
    if stop is Stop.HOURS:
        raise ConfigError(f"hours={p.cfg.hours:g} is too small: the first epoch did not finish within the "
                          f"budget ({usage(p, run, ep).seconds:.1f} s so far); allowed: a budget of at least one epoch")
    if stop is not Stop.SIGNAL and flags.step is Stop.NO and not p.sampler.carries_queue \
            and (step := ep.queue.flush()) is not None:
        train_step(p, run, ep, step, hooks)
    return stop


def close_chunks(p: Parts, run: RunState, ep: EpochState, last_steps: int, hooks: Hooks) -> Stop:
    """After the epoch's last chunk: its flush step, the sampler's rescoring, and a grid point
    reached without a step after it."""
    if flush_due(p, last_steps) and (step := ep.queue.flush()) is not None:
        if (stop := train_step(p, run, ep, step, hooks)) is not Stop.NO:
            return stop
    rescore(p, run, ep)
    if grid.due(p, run, end := usage(p, run, ep)):
        grid.evaluate_now(p, run, ep, end, hooks)
    return Stop.NO


def chunk_size(p: Parts, ep: EpochState) -> int:
    """This epoch's chunk size: the run's, unless the sampler groups its chunks per epoch (the
    SB authors' stale epochs)."""
    return p.sampler.epoch_chunk(ep.epoch, p.chunk)


def flush_due(p: Parts, last_steps: int) -> bool:
    """epoch_end=flush: whether the examples still waiting take one smaller step. With a cap on
    steps per chunk, only when the last chunk had a step left (the authors' get_batch(final=True)
    returns a full batch when one waits, and all that waits only otherwise)."""
    cap = p.sampler.steps_per_chunk
    return not p.sampler.carries_queue and (cap is None or last_steps < cap)


def start_epoch(p: Parts, run: RunState, ep: EpochState) -> None:
    """Seed the epoch's streams (or continue them after a mid-epoch resume), ask the sampler which
    examples this epoch passes through, and set the epoch-indexed learning rate."""
    cfg = p.cfg
    p.stream.start_epoch(ep.epoch)
    ep.gen = generator(p.device, cfg.seed, "select", p.dist.rank, ep.epoch)
    if ep.gen_states is not None:
        ep.gen.set_state(ep.gen_states["select"])
        p.stream.set_generator_state(ep.gen_states.get("augment"))
    if ep.chunk_index == 0:
        ep.visit = p.sampler.visit(ep.epoch, p.meter.fraction(usage(p, run, ep)),
                                   generator("cpu", cfg.seed, "visit", ep.epoch))
        if ep.visit is not None:
            ep.visit = ep.visit.to(p.device)
        visited = len(p.stream) if ep.visit is None else int(ep.visit[p.stream.shard].sum())
        # every rank walks the same number of chunks, so the per-chunk collectives pair up
        size = chunk_size(p, ep)
        ep.n_chunks = max(1, max(math.ceil(n / size) for n, in p.dist.gather_ints([visited])))
    set_lr(p, run, ep, usage(p, run, ep))
    p.timer.start_epoch()


def capture_streams(p: Parts, ep: EpochState) -> None:
    """Record the epoch's generator states (for a mid-epoch checkpoint)."""
    ep.gen_states = {"select": ep.gen.get_state()}
    aug = p.stream.generator_state()
    if aug is not None:
        ep.gen_states["augment"] = aug


def usage(p: Parts, run: RunState, ep: Optional[EpochState] = None, extra_backprops: int = 0,
          in_chunk: bool = False) -> Usage:
    """What the run has spent, up to this point of `ep` (None: the start of epoch run.epoch,
    between epochs). `in_chunk`: the current chunk counted as walked; `extra_backprops`: a step
    about to be taken, whose seconds are taken to be the last step's."""
    seconds = run.totals["train_time"] + (0.0 if ep is None else ep.phases.get("total", 0.0)) + p.timer.elapsed()
    if extra_backprops:
        seconds += ep.step_s
    return run_state.usage(run, ep, seconds, extra_backprops, in_chunk)


def set_lr(p: Parts, run: RunState, ep: EpochState, after: Usage) -> None:
    """The schedule's lr at `after` (the position once the next step is done, so the last step of
    a budget runs at exactly final_lr_frac), times the sampler's factor for this epoch."""
    base = scaled_lr(p.cfg.optim.lr, p.cfg.batch_size, p.cfg.optim.batch_ref) * p.sampler.lr_factor(ep.epoch)
    backprops_before = (int(run.totals["backprops"]) + ep.global_backprops) / p.n   # multistep by=backprops
    run.lr = learning_rate(p.cfg.schedule, base, ep.epoch, backprops_before, p.meter.fraction(after))
    for group in p.optimizer.param_groups:
        group["lr"] = run.lr


def train_chunk(p: Parts, run: RunState, ep: EpochState, chunk: Any, hooks: Hooks,
                stop_requested: Callable[[], bool]) -> Flags:
    """Select from one chunk, queue its choice and take every full step. Returns what the stop
    decision after the chunk needs: whether a step spent the run's length (the chunk's remaining
    steps are then skipped), and the ranks' flags from the chunk's gather."""
    t = p.timer
    ctx = Ctx(epoch=ep.epoch, batch=ep.chunk_index, progress=p.meter.fraction(usage(p, run, ep)), generator=ep.gen,
              idx=chunk.idx)
    need = p.sampler.need(ctx)
    idx, x, y, weight = select_from(p, run, ctx, need, chunk)
    # The one collective per chunk: every rank's kept count (the step ledger), its chunk size (the
    # scoring count), the examples its stream read, and its stop flags (a signal; past `hours`).
    seconds = usage(p, run, ep).seconds
    info = p.dist.gather_ints([idx.numel(), len(chunk), chunk.loaded, int(stop_requested()),
                               int(past_hours_in_first_epoch(p, run.epoch, seconds))])
    ep.loaded += sum(r[2] for r in info)
    if need in (Need.FRESH, Need.CHARGED):
        ep.select_forwards += sum(r[1] for r in info)
    if need is Need.FRESH and p.proxy is not None and p.proxy.next_chunk_trains():
        # the proxy learns from the examples selected (airbench96_faster's top half of each batch)
        proxy.train_step(p.proxy, x, y, run.lr * p.proxy.lr_scale, t, p.autocast)
        ep.proxy_backprops += sum(r[0] for r in info)
    ep.queue.push(idx, x, y, weight, [r[0] for r in info])
    cap, taken = p.sampler.steps_per_chunk, 0
    while (cap is None or taken < cap) and (step := ep.queue.pop()) is not None:
        taken += 1
        if (stop := train_step(p, run, ep, step, hooks)) is not Stop.NO:
            return Flags(step=stop)
    return Flags(signal=any(r[3] for r in info), over_hours=any(r[4] for r in info))


def select_from(p: Parts, run: RunState, ctx: Ctx, need: Need, chunk: Any):
    """The chunk's selection: (training indices, images, labels, loss weights) of the examples
    the sampler keeps, scoring them first when it needs fresh losses."""
    t = p.timer
    x = y = losses = None
    if need is Need.FRESH:
        with t.phase("data"):
            x, y = chunk.images()
        with t.phase("select_fwd"):
            losses = score(p, x, y)
        with t.phase("bookkeeping"):
            run.last_loss[chunk.idx] = losses
    elif need is Need.CACHED:
        with t.phase("bookkeeping"):
            losses = run.last_loss[chunk.idx]
    with t.phase("bookkeeping"):
        if losses is not None and p.sampler.global_losses:
            ctx.window = p.dist.gather_cat(losses)
        sel = p.sampler.select(losses, ctx)
        idx = chunk.idx if sel.pos is None else chunk.idx[sel.pos]
    with t.phase("data"):
        if x is None:
            x, y = chunk.images(sel.pos)
        elif sel.pos is not None:
            x, y = x[sel.pos], y[sel.pos]
    return idx, x, y, sel.weight


def train_step(p: Parts, run: RunState, ep: EpochState, step: Step, hooks: Hooks) -> Stop:
    """One SGD step on a queued batch. Returns Stop.BUDGET when it spent the rest of the budget."""
    t0 = time.perf_counter()
    after = usage(p, run, ep, extra_backprops=step.total, in_chunk=True)
    set_lr(p, run, ep, after)
    ep.global_backprops += step.total
    ep.steps += 1
    info = None
    if hooks.wants("before_step") or hooks.wants("after_step"):
        info = StepInfo(ep.epoch, run_state.counted(run, ep)["steps"], step.idx, step.total, run.lr, p.model,
                        p.optimizer)
        hooks.call("before_step", info)
    if step.idx.numel():
        backprop(p, run, ep, step)
    else:
        empty_step(p)
    if info is not None:
        hooks.call("after_step", info)
    # Every rank counts every step, so the (collective) divergence check stays in lockstep.
    if p.cfg.nan_check:
        ep.since_check += 1
        if ep.since_check >= NAN_CHECK_EVERY:
            check_finite(p, ep)
    ep.step_s = time.perf_counter() - t0
    stop = should_stop(p, after, At.STEP)
    if grid.due(p, run, after):      # eval.every: this step crossed a grid point
        grid.evaluate_now(p, run, ep, after, hooks)
    return stop


def train_forward(p: Parts, x: torch.Tensor) -> torch.Tensor:
    """Logits of the training network (DDP-wrapped under torchrun), at the training precision."""
    return run_graph(p.net, p.compiled.get("train"), p.local_batch, x, p.autocast)


def select_forward(p: Parts, x: torch.Tensor) -> torch.Tensor:
    """Logits of the scoring network (the proxy, if any) at the scoring precision; callers choose
    the mode and the gradient context (see `scoring_logits`)."""
    return run_graph(scorer(p), p.compiled.get("select"), p.chunk, x, p.score_autocast)


def run_graph(net: torch.nn.Module, compiled: Optional[Any], full: int, x: torch.Tensor,
              precision: Any) -> torch.Tensor:
    """`net`'s logits; a full-size batch (`full` examples) runs the compiled graph when compile=true."""
    if compiled is not None and x.shape[0] == full:
        net = compiled
        if x.storage_offset():      # a view into the queue: give the graph a fresh tensor
            x = x.clone()
    with precision:
        return net(x)


def score(p: Parts, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example losses of a scoring forward (see `scoring_logits`)."""
    return F.cross_entropy(scoring_logits(p, x).float(), y, reduction="none")


def scoring_logits(p: Parts, x: torch.Tensor) -> torch.Tensor:
    """A scoring forward without gradients: in eval mode (the SB authors), or in train mode
    (`selection_forward=train`, Composer, RHO-LOSS, KAKURENBO), where batch-norm running
    statistics update on every scored example and dropout is on; at `scoring.scale` and
    `scoring.precision`; on the proxy (`scoring.proxy`) when there is one."""
    train_mode = p.cfg.selection_forward == "train"
    scorer(p).train(train_mode)
    with (torch.no_grad() if train_mode else torch.inference_mode()):
        return select_forward(p, downsample(x, p.cfg.scoring.scale))


def backprop(p: Parts, run: RunState, ep: EpochState, step: Step) -> None:
    t = p.timer
    p.net.train()
    with t.phase("train_fwd"):
        out = train_forward(p, step.x)
        losses = F.cross_entropy(out.float(), step.y, reduction="none")
        weighted = losses if step.w is None else losses * step.w
        # Sum / global count (times world size, which DDP's gradient averaging divides out) gives
        # the mean over every example of the step, however the ranks split it.
        loss = weighted.sum() * (p.dist.world / step.total)
    with t.phase("backward"):
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        p.optimizer.step()
    with t.phase("bookkeeping"):
        detached = losses.detach()
        run.last_loss[step.idx] = detached
        observe(p, step.idx, detached, out.detach(), step.y, trained=True)
        run.counts.index_add_(0, step.idx, torch.ones_like(step.idx))
        ep.loss_sum += detached.sum()
        ep.mislabeled += p.data.noisy[step.idx].sum()
        ep.backprops += step.idx.numel()
        ep.nonfinite |= ~torch.isfinite(loss.detach())


def empty_step(p: Parts) -> None:
    """This rank holds none of a global step's examples: it still joins DDP's gradient
    all-reduce, with a zero-weighted dummy forward in eval mode (no batch-norm update), and the
    gathering of observations, with none of its own."""
    p.net.eval()
    x = torch.zeros((1, *p.input_shape), device=p.device).contiguous(memory_format=p.memory_format)
    out = train_forward(p, x)
    loss = F.cross_entropy(out.float(), torch.zeros(1, dtype=torch.long, device=p.device)) * 0.0
    p.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    p.optimizer.step()
    if p.sampler.global_observations and p.dist.active:
        none = torch.empty(0, dtype=torch.long, device=p.device)
        observe(p, none, torch.empty(0, device=p.device), out.detach()[:0], none, trained=True)


def observe(p: Parts, idx: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
            trained: bool) -> None:
    """Report a forward over training examples to the sampler (all ranks' when it asks)."""
    s = p.sampler
    confidence = correct = None
    if s.wants_predictions:
        confidence, predicted = logits.float().softmax(1).max(1)     # softmax over classes
        correct = predicted == labels
    if s.global_observations and p.dist.active:
        idx, losses = p.dist.gather_cat(idx), p.dist.gather_cat(losses)
        if confidence is not None:
            confidence, correct = p.dist.gather_cat(confidence), p.dist.gather_cat(correct)
    s.observe(Observation(idx, losses, confidence, correct, trained))


def rescore(p: Parts, run: RunState, ep: EpochState) -> None:
    """Forward-only passes the sampler asks for at the end of the epoch (KAKURENBO's hidden
    examples), counted as scoring forwards. Every rank walks as many parts as the rank with the
    most, so the gathering in `observe` pairs up."""
    idx = p.sampler.rescore(ep.epoch)
    if idx is None:
        return
    idx = idx.to(p.device)
    if p.dist.active:
        idx = idx[idx % p.dist.world == p.dist.rank]     # this rank's shard (examples rank, rank+N, ...)
    counts = [c for c, in p.dist.gather_ints([idx.numel()])]
    size = p.chunk      # the run's chunk size
    with p.timer.phase("select_fwd"):
        for i in range(max(math.ceil(c / size) for c in counts)):
            part = idx[i * size:(i + 1) * size]
            x, y = p.stream.fetch(part)
            logits = scoring_logits(p, x).float() if part.numel() else \
                torch.empty(0, p.data.spec.num_classes, device=p.device)
            losses = F.cross_entropy(logits, y, reduction="none")
            run.last_loss[part] = losses
            observe(p, part, losses, logits, y, trained=False)
    ep.select_forwards += sum(counts)
    ep.loaded += sum(counts)      # KAKURENBO's hidden examples are read to be rescored


def check_finite(p: Parts, ep: EpochState) -> None:
    ep.since_check = 0
    if p.dist.any(bool(ep.nonfinite)):
        raise Diverged(f"non-finite training loss in epoch {ep.epoch + 1} (lr={p.optimizer.param_groups[0]['lr']:g}); "
                       f"the run diverged")

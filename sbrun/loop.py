"""One epoch, top to bottom: chunk -> scoring forward -> sampler -> queue -> step.

Plain functions over the run's parts (build.Parts: model, optimizer, sampler, stream, ...) and
its explicit state (state.RunState, state.EpochState). The loop never looks at which sampler it
runs. Counters stay on the device and are read once per epoch; the only per-chunk host sync is
learning how many examples were chosen (the queue must know when a full batch waits). Budgets
are checked on host integers, so they cost nothing and a resumed run stops at the same step.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import grid, proxy
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

NAN_CHECK_EVERY = 64   # steps between host reads of the non-finite-loss flag


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def run_epoch(p, run: RunState, ep: EpochState, hooks: Hooks,
              stop_requested: Callable[[], bool] = lambda: False) -> Optional[str]:
    """Train the epoch `ep` from its next chunk. Returns why it ended early ("budget": the run's
    budget is spent; "signal": a stop was requested), or None when every chunk was walked."""
    start_epoch(p, run, ep)
    bar = tqdm(total=ep.n_chunks, initial=ep.chunk, desc=f"epoch {ep.epoch + 1}", leave=False,
               disable=p.bar_disabled, unit="batch")
    last_steps = 0      # steps the epoch's last chunk took (the authors' partial step depends on it)
    try:
        for chunk in p.stream.chunks(epoch_chunk(p, ep), ep.n_chunks, start=ep.chunk, visit=ep.visit):
            if budget_spent(p, usage(p, run, ep)):
                # epoch_end=flush: what waits becomes the run's last step, at the schedule's final lr;
                # carry: it is never stepped nor counted
                if not p.sampler.carries_queue and (step := ep.queue.flush()) is not None:
                    train_step(p, run, ep, step, hooks)
                return "budget"
            before = ep.steps
            spent = train_chunk(p, run, ep, chunk, hooks)
            last_steps = ep.steps - before
            ep.chunk += 1
            bar.update(1)
            if spent:
                return "budget"
            if p.dist.any(stop_requested()) and ep.chunk < ep.n_chunks:
                return "signal"
        if flush_due(p, last_steps) and (step := ep.queue.flush()) is not None:
            if train_step(p, run, ep, step, hooks):
                return "budget"
        rescore(p, run, ep)
        if grid.due(p, run, end := usage(p, run, ep)):     # a grid point reached without a step after it
            grid.evaluate_now(p, run, ep, end, hooks)
        return None
    finally:
        bar.close()
        if p.cfg.nan_check:
            check_finite(p, ep)


def epoch_chunk(p, ep: EpochState) -> int:
    """This epoch's selection batch ("chunk") size: the run's, unless the sampler groups its
    chunks per epoch (the SB authors' stale epochs)."""
    return p.sampler.epoch_chunk(ep.epoch, p.chunk)


def flush_due(p, last_steps: int) -> bool:
    """epoch_end=flush: whether the examples still waiting take one smaller step. With a cap on
    steps per chunk, only when the last chunk had a step left (the authors' get_batch(final=True)
    returns a full batch when one waits, and all that waits only otherwise)."""
    cap = p.sampler.steps_per_chunk
    return not p.sampler.carries_queue and (cap is None or last_steps < cap)


def start_epoch(p, run: RunState, ep: EpochState) -> None:
    """Seed the epoch's streams (or continue them after a mid-epoch resume), ask the sampler which
    examples this epoch passes through, and set the epoch-indexed learning rate."""
    cfg = p.cfg
    p.stream.start_epoch(ep.epoch)
    ep.gen = generator(p.device, cfg.seed, "select", p.dist.rank, ep.epoch)
    if ep.gen_states is not None:
        ep.gen.set_state(ep.gen_states["select"])
        p.stream.set_generator_state(ep.gen_states.get("augment"))
    if ep.chunk == 0:
        ep.visit = p.sampler.visit(ep.epoch, p.meter.fraction(usage(p, run, ep)),
                                   generator("cpu", cfg.seed, "visit", ep.epoch))
        if ep.visit is not None:
            ep.visit = ep.visit.to(p.device)
        visited = len(p.stream) if ep.visit is None else int(ep.visit[p.stream.shard].sum())
        # every rank walks the same number of chunks, so the per-chunk collectives pair up
        size = epoch_chunk(p, ep)
        ep.n_chunks = max(1, max(math.ceil(n / size) for n, in p.dist.gather_ints([visited])))
    set_lr(p, run, ep, usage(p, run, ep))
    p.timer.start_epoch()


def budget_spent(p, u: Usage) -> bool:
    """Whether the run's length is spent at `u`. Every unit but seconds is a host count equal on
    all ranks; seconds are each rank's own clock, so the ranks agree through one reduction."""
    spent = p.meter.spent(u)
    return p.dist.any(spent) if p.meter.unit == "seconds" else spent


def capture_streams(p, ep: EpochState) -> None:
    """Record the epoch's generator states (for a mid-epoch checkpoint)."""
    ep.gen_states = {"select": ep.gen.get_state()}
    aug = p.stream.generator_state()
    if aug is not None:
        ep.gen_states["augment"] = aug


def usage(p, run: RunState, ep: EpochState, extra_backprops: int = 0, in_chunk: bool = False) -> Usage:
    """What the run has spent, up to this point of `ep` (`in_chunk`: counting the current chunk
    as walked; `extra_backprops`: a step about to be taken)."""
    pos = min(ep.chunk + int(in_chunk), ep.n_chunks) / max(ep.n_chunks, 1)
    seconds = run.totals["train_time"] + ep.phases.get("total", 0.0) + p.timer.elapsed()
    if extra_backprops:
        seconds += ep.step_s     # a step's expected duration: the last one's
    return Usage(epochs=run.epoch + pos, select_forwards=int(run.totals["select_forwards"]) + ep.select_forwards,
                 backprops=int(run.totals["backprops"]) + ep.global_backprops + extra_backprops,
                 seconds=seconds, extra_work=run.totals["extra_work"],
                 proxy_backprops=int(run.totals["proxy_backprops"]) + ep.proxy_backprops,
                 loaded=int(run.totals["loaded"]) + ep.loaded)


def set_lr(p, run: RunState, ep: EpochState, after: Usage) -> None:
    """The schedule's lr at `after` (the position once the next step is done, so the last step of
    a budget runs at exactly final_lr_frac), times the sampler's factor for this epoch."""
    base = scaled_lr(p.cfg.optim.lr, p.cfg.batch_size, p.cfg.optim.batch_ref) * p.sampler.lr_factor(ep.epoch)
    backprops_before = (int(run.totals["backprops"]) + ep.global_backprops) / p.n   # multistep by=backprops
    run.lr = learning_rate(p.cfg.schedule, base, ep.epoch, backprops_before, p.meter.fraction(after))
    for group in p.optimizer.param_groups:
        group["lr"] = run.lr


def train_chunk(p, run: RunState, ep: EpochState, chunk, hooks: Hooks) -> bool:
    """Select from one chunk, queue its choice and take every full step. True once the budget
    is spent."""
    t = p.timer
    ctx = Ctx(epoch=ep.epoch, batch=ep.chunk, progress=p.meter.fraction(usage(p, run, ep)), generator=ep.gen,
              idx=chunk.idx)
    need = p.sampler.need(ctx)
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
    # One small collective per chunk: every rank's kept count (the step ledger), its chunk size
    # (the scoring count), whether it ran out of its time cap in the first epoch, and the examples
    # its stream read for the chunk.
    info = p.dist.gather_ints([idx.numel(), len(chunk), int(first_epoch_over_hours(p, run, ep)), chunk.loaded])
    ep.loaded += sum(r[3] for r in info)
    if need in (Need.FRESH, Need.CHARGED):
        ep.select_forwards += sum(r[1] for r in info)
    if need is Need.FRESH and p.proxy is not None and p.proxy.next_chunk_trains():
        # the proxy learns from the examples selected (airbench96_faster's top half of each batch)
        proxy.train_step(p.proxy, x, y, run.lr * p.proxy.lr_scale, t, p.autocast)
        ep.proxy_backprops += sum(r[0] for r in info)
    ep.queue.push(idx, x, y, sel.weight, [r[0] for r in info])
    cap, taken = p.sampler.steps_per_chunk, 0
    while (cap is None or taken < cap) and (step := ep.queue.pop()) is not None:
        taken += 1
        if train_step(p, run, ep, step, hooks):
            return True
    if any(r[2] for r in info):
        raise ConfigError(f"hours={p.cfg.hours:g} is too small: the first epoch did not finish within the "
                          f"budget ({usage(p, run, ep).seconds:.1f} s so far); allowed: a budget of at least one epoch")
    return False


def first_epoch_over_hours(p, run: RunState, ep: EpochState) -> bool:
    hours = p.cfg.hours
    # the epoch's seconds so far, those before a resume or a grid evaluation's pause included
    return hours is not None and run.epoch == 0 and usage(p, run, ep).seconds > hours * 3600


def train_step(p, run: RunState, ep: EpochState, step: Step, hooks: Hooks) -> bool:
    """One SGD step on a queued batch. True when it spent the rest of the budget."""
    t0 = time.perf_counter()
    after = usage(p, run, ep, extra_backprops=step.total, in_chunk=True)
    set_lr(p, run, ep, after)
    ep.global_backprops += step.total
    ep.steps += 1
    info = None
    if hooks.wants("before_step") or hooks.wants("after_step"):
        info = StepInfo(ep.epoch, int(run.totals["steps"]) + ep.steps, step.idx, step.total, run.lr, p.model,
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
    # An epochs budget is spent at chunk boundaries (run_epoch checks before each chunk); the
    # other units can run out at any step.
    spent = p.meter.unit != "epochs" and budget_spent(p, after)
    if grid.due(p, run, after):      # eval.every: this step crossed a grid point
        grid.evaluate_now(p, run, ep, after, hooks)
    return spent


def forward(p, kind: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of the training ("train") or scoring ("select": the proxy, if any) network; full-size
    batches run the compiled graph when compile=true."""
    net = p.net if kind == "train" else scorer(p)
    full = p.local_batch if kind == "train" else p.chunk
    if kind in p.compiled and x.shape[0] == full:
        net = p.compiled[kind]
        if x.storage_offset():      # a view into the queue: give the graph a fresh tensor
            x = x.clone()
    with (p.autocast if kind == "train" else p.score_autocast):
        return net(x)


def score(p, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example losses of a scoring forward (see `scoring_logits`)."""
    return F.cross_entropy(scoring_logits(p, x).float(), y, reduction="none")


def scoring_logits(p, x: torch.Tensor) -> torch.Tensor:
    """A scoring forward without gradients: in eval mode (the SB authors), or in train mode
    (`selection_forward=train`, Composer, RHO-LOSS, KAKURENBO), where batch-norm running
    statistics update on every scored example and dropout is on; at `scoring.scale` and
    `scoring.precision`; on the proxy (`scoring.proxy`) when there is one."""
    train_mode = p.cfg.selection_forward == "train"
    scorer(p).train(train_mode)
    with (torch.no_grad() if train_mode else torch.inference_mode()):
        return forward(p, "select", downsample(x, p.cfg.scoring.scale))


def backprop(p, run: RunState, ep: EpochState, step: Step) -> None:
    t = p.timer
    p.net.train()
    with t.phase("train_fwd"):
        out = forward(p, "train", step.x)
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


def empty_step(p) -> None:
    """This rank holds none of a global step's examples: it still joins DDP's gradient
    all-reduce, with a zero-weighted dummy forward in eval mode (no batch-norm update), and the
    gathering of observations, with none of its own."""
    p.net.eval()
    x = torch.zeros((1, *p.input_shape), device=p.device).contiguous(memory_format=p.memory_format)
    out = forward(p, "train", x)
    loss = F.cross_entropy(out.float(), torch.zeros(1, dtype=torch.long, device=p.device)) * 0.0
    p.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    p.optimizer.step()
    if p.sampler.global_observations and p.dist.active:
        none = torch.empty(0, dtype=torch.long, device=p.device)
        observe(p, none, torch.empty(0, device=p.device), out.detach()[:0], none, trained=True)


def observe(p, idx: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
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


def rescore(p, run: RunState, ep: EpochState) -> None:
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
    parts = max(math.ceil(c / p.chunk) for c in counts)
    with p.timer.phase("select_fwd"):
        for i in range(parts):
            part = idx[i * p.chunk:(i + 1) * p.chunk]
            x, y = p.stream.fetch(part)
            logits = scoring_logits(p, x).float() if part.numel() else \
                torch.empty(0, p.data.spec.num_classes, device=p.device)
            losses = F.cross_entropy(logits, y, reduction="none")
            run.last_loss[part] = losses
            observe(p, part, losses, logits, y, trained=False)
    ep.select_forwards += sum(counts)
    ep.loaded += sum(counts)      # KAKURENBO's hidden examples are read to be rescored


def check_finite(p, ep: EpochState) -> None:
    ep.since_check = 0
    if p.dist.any(bool(ep.nonfinite)):
        raise Diverged(f"non-finite training loss in epoch {ep.epoch + 1} (lr={p.optimizer.param_groups[0]['lr']:g}); "
                       f"the run diverged")

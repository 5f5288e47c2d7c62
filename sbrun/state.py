"""What a run's state is, and what a checkpoint holds.

`RunState` outlives epochs (per-example losses and counts, totals, metrics rows); `EpochState` is
the epoch in progress (its position, counters, queue and random streams). A checkpoint is both,
plus the model, optimizer, sampler and global RNG states; `restore` returns them as values, so
nothing about a resume is hidden in an object waiting to be consumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from . import checkpoint as ckpt
from .config import ConfigError
from .identity import check_compatible, to_dict
from .queue import BackpropQueue
from .seeding import global_rng_state, set_global_rng_state

FORMAT = 2
TOTALS = ("select_forwards", "backprops", "steps", "train_time", "wall_time", "extra_work", "proxy_backprops",
          "loaded")


@dataclass
class RunState:
    last_loss: torch.Tensor            # most recent known loss per training example (inf = never seen)
    counts: torch.Tensor               # times each example was backpropagated
    epoch: int = 0                     # epochs completed
    totals: Dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in TOTALS})
    rows: List[Dict] = field(default_factory=list)          # metrics.csv
    snapshots: Dict[str, torch.Tensor] = field(default_factory=dict)
    lr: float = 0.0
    stop_reason: Optional[str] = None  # epochs | hours | budget, once the run has ended
    # Evaluation grid (eval.every): grid points evaluated so far, the interval counters of the
    # epochs completed since the last row, and the sampler's latest end-of-epoch columns.
    evals: int = 0
    pending: Dict[str, float] = field(default_factory=dict)
    extra: Dict[str, float] = field(default_factory=dict)
    clock0: float = 0.0                # runtime: perf_counter() at which wall_time was 0 (not checkpointed)

    @classmethod
    def new(cls, n: int, device: torch.device, lr: float) -> "RunState":
        return cls(torch.full((n,), float("inf"), device=device), torch.zeros(n, dtype=torch.int64, device=device),
                   lr=lr)

    def shared(self) -> dict:
        return {"epoch": self.epoch, "totals": dict(self.totals), "rows": list(self.rows),
                "snapshots": dict(self.snapshots), "lr": self.lr, "stop_reason": self.stop_reason,
                "evals": self.evals, "pending": dict(self.pending), "extra": dict(self.extra)}


@dataclass
class EpochState:
    """The epoch in progress. Counters marked (all) count every rank; the rest this rank."""
    epoch: int
    queue: BackpropQueue
    loss_sum: torch.Tensor
    mislabeled: torch.Tensor
    chunk: int = 0                  # next chunk to process
    n_chunks: int = 1
    backprops: int = 0
    global_backprops: int = 0       # (all)
    select_forwards: int = 0        # (all)
    proxy_backprops: int = 0        # (all) examples the proxy scorer trained on
    loaded: int = 0                 # (all) training examples read from storage (examples_loaded)
    steps: int = 0                  # (all: every rank takes part in every step)
    phases: Dict[str, float] = field(default_factory=dict)   # seconds before a resume or a grid evaluation
    visit: Optional[torch.Tensor] = None                     # the sampler's pass-through mask
    gen_states: Optional[Dict[str, torch.Tensor]] = None     # selection/augmentation streams
    mark: Dict[str, float] = field(default_factory=dict)     # interval counters at this epoch's last row (eval.every)
    # Runtime only (rebuilt by loop.start_epoch, never checkpointed):
    gen: Optional[torch.Generator] = None   # this rank's selection stream
    step_s: float = 0.0                     # the last step's duration (seconds budgets)
    since_check: int = 0                    # steps since the last non-finite check
    nonfinite: Optional[torch.Tensor] = None

    @classmethod
    def new(cls, epoch: int, batch_size: int, rank: int, device: torch.device) -> "EpochState":
        zero = torch.zeros((), device=device)
        return cls(epoch, BackpropQueue(batch_size, rank), zero.clone(), zero.clone(),
                   nonfinite=torch.zeros((), dtype=torch.bool, device=device))

    def shared(self) -> dict:
        keep = ("epoch", "chunk", "n_chunks", "global_backprops", "select_forwards", "proxy_backprops", "steps",
                "loaded", "phases", "mark")
        return {k: getattr(self, k) for k in keep}

    def local(self) -> dict:
        return {"backprops": self.backprops, "loss_sum": self.loss_sum, "mislabeled": self.mislabeled,
                "visit": self.visit, "queue": self.queue.state_dict(), "gen_states": self.gen_states}


def save(p, run: RunState, ep: EpochState, mid: bool) -> None:
    """Write a checkpoint of the run at `ep` (mid-epoch when `mid`; else `ep` is a fresh epoch)."""
    if not p.cfg.checkpoint.enabled:
        return
    local = {"sampler": p.sampler.state_dict(), "last_loss": run.last_loss, "counts": run.counts,
             "epoch": ep.local() if mid else None,
             # a queue carried into the next epoch (sampler.epoch_end=carry) is part of the state too
             "carried": ep.queue.state_dict() if not mid and len(ep.queue) else None}
    if p.proxy is not None:         # each rank's own: under DDP every rank's proxy trains on its share
        local["proxy"] = p.proxy.state_dict()
    ranks = p.dist.gather_state(local)
    if p.dist.rank != 0:
        return
    payload = {
        "format": FORMAT,
        "config": to_dict(p.cfg),
        "world_size": p.dist.world,
        "epoch": ep.epoch,
        "chunk": ep.chunk if mid else None,
        "model": p.model.state_dict(),
        "optimizer": p.optimizer.state_dict(),
        "run": run.shared(),
        "epoch_state": ep.shared() if mid else None,
        "noisy": p.data.noisy.cpu(),
        "ranks": ranks,
        "rng": global_rng_state(),
    }
    ckpt.save(p.run_dir, payload, ckpt.tag(ep.epoch, ep.chunk if mid else None), p.cfg.checkpoint.keep)


def kept_rows(p, shared: dict) -> List[Dict]:
    """The rows a continued run keeps. A row of a partial epoch (a run that ended on its budget
    mid-epoch) is dropped: the continued epoch writes its complete row. On an evaluation grid
    every saved row is a grid point (a run's final row is written after its last checkpoint)."""
    if p.cfg.eval.every is not None:
        return list(shared["rows"])
    return [r for r in shared["rows"] if r["epoch"] <= int(shared["epoch"])]


def restore(p, payload: dict) -> Tuple[RunState, Optional[EpochState]]:
    """The run state (and the epoch in progress, for a mid-epoch checkpoint) of a checkpoint,
    loaded into the parts' model, optimizer and sampler."""
    if payload.get("format") != FORMAT:
        raise ConfigError(f"checkpoint format {payload.get('format')} is invalid for this sbrun; allowed: format "
                          f"{FORMAT} (the run was written by another version; start it again)")
    check_compatible(payload["config"], to_dict(p.cfg), "checkpoint")
    if payload["world_size"] != p.dist.world:
        raise ConfigError(f"world size {p.dist.world} is invalid for this checkpoint; allowed: the world size it "
                          f"was written with ({payload['world_size']})")
    if not torch.equal(payload["noisy"].to(p.device), p.data.noisy):
        raise ConfigError("label_noise: the checkpoint's noisy-label mask differs from this run's; allowed: the "
                          "dataset, label_noise and seed the run started with")
    p.model.load_state_dict(payload["model"])
    p.optimizer.load_state_dict(payload["optimizer"])
    local = p.dist.scatter_state(payload["ranks"])
    p.sampler.load_state_dict(local["sampler"])
    if p.proxy is not None:
        p.proxy.load_state_dict(local["proxy"])
    shared = payload["run"]
    run = RunState(local["last_loss"].to(p.device), local["counts"].to(p.device), epoch=int(shared["epoch"]),
                   totals={**{k: 0.0 for k in TOTALS}, **shared["totals"]}, snapshots=dict(shared["snapshots"]),
                   lr=float(shared["lr"]), stop_reason=shared.get("stop_reason"), evals=int(shared.get("evals", 0)),
                   pending=dict(shared.get("pending", {})), extra=dict(shared.get("extra", {})),
                   rows=kept_rows(p, shared))
    set_global_rng_state(payload["rng"])
    ep = None
    if local.get("carried") is not None:
        ep = EpochState.new(payload["epoch"], p.local_batch, p.dist.rank, p.device)
        ep.queue.load_state_dict(local["carried"], p.device)
    if payload["epoch_state"] is not None:
        mine = local["epoch"]
        ep = EpochState.new(payload["epoch"], p.local_batch, p.dist.rank, p.device)
        for k, v in payload["epoch_state"].items():
            setattr(ep, k, v)
        ep.backprops = int(mine["backprops"])
        ep.loss_sum = mine["loss_sum"].to(p.device)
        ep.mislabeled = mine["mislabeled"].to(p.device)
        ep.visit = None if mine["visit"] is None else mine["visit"].to(p.device)
        ep.gen_states = mine["gen_states"]
        ep.queue.load_state_dict(mine["queue"], p.device)
    return run, ep

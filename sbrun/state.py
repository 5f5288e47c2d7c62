"""What a run's state is, and what a checkpoint holds.

`RunState` outlives epochs (per-example losses and counts, totals, metrics rows); `EpochState` is
the epoch in progress (its position, counters, queue and random streams). A checkpoint is both,
plus the model, optimizer, sampler and global RNG states; `restore` returns them as values, so
nothing about a resume is hidden in an object waiting to be consumed.

Each state field says where a checkpoint keeps it (`kept`): SHARED fields are equal on every rank
and saved once; LOCAL fields are each rank's own and saved per rank; RUNTIME fields are rebuilt
and never saved. Saving and restoring read these scopes, so a new field is one line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch

from . import checkpoint as ckpt
from .budget import Usage
from .config import ConfigError
from .identity import check_compatible, to_dict
from .queue import BackpropQueue
from .seeding import global_rng_state, set_global_rng_state

if TYPE_CHECKING:
    from .build import Parts

FORMAT = 2
TOTALS = ("select_forwards", "backprops", "steps", "train_time", "wall_time", "extra_work", "proxy_backprops",
          "loaded")
# The run totals an epoch adds to, and the EpochState counter (all ranks') that each adds.
EPOCH_COUNTERS = {"select_forwards": "select_forwards", "backprops": "global_backprops", "steps": "steps",
                  "proxy_backprops": "proxy_backprops", "loaded": "loaded"}

SHARED, LOCAL, RUNTIME = "shared", "local", "runtime"


def kept(scope: str, key: Optional[str] = None, **kw):
    """A state field kept in checkpoints at `scope` (SHARED, LOCAL or RUNTIME), under `key` when
    its checkpoint name differs from the field's (a renamed field still reads old checkpoints)."""
    return field(metadata={"scope": scope, "key": key}, **kw)


class Checkpointed:
    """Checkpoint contents derived from a state dataclass's `kept` fields."""

    def shared(self) -> dict:
        return self._saved(SHARED)

    def local(self) -> dict:
        return self._saved(LOCAL)

    def _saved(self, scope: str) -> dict:
        return {key: snapshot(getattr(self, f.name)) for f, key in scoped(self, scope)}

    def load(self, scope: str, saved: dict, device: torch.device) -> None:
        """Set the fields of `scope` from a checkpoint's `saved`. A field the checkpoint lacks keeps
        its default, and a dict field its default keys (a checkpoint written before they existed)."""
        for f, key in scoped(self, scope):
            if key not in saved:
                continue
            current, v = getattr(self, f.name), saved[key]
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(v, device)
            elif isinstance(v, torch.Tensor):
                setattr(self, f.name, v.to(device))
            elif isinstance(current, dict) and isinstance(v, dict):
                setattr(self, f.name, {**current, **v})
            else:
                setattr(self, f.name, v)


def snapshot(value):
    """A field's value as a checkpoint holds it: the queue by its state_dict, containers copied
    (the payload must not change with the live state before it is written)."""
    if hasattr(value, "state_dict"):
        return value.state_dict()
    return type(value)(value) if isinstance(value, (dict, list)) else value


def scoped(state, scope: str) -> List[Tuple[dataclasses.Field, str]]:
    """The fields of `state` kept at `scope`, with their checkpoint keys."""
    return [(f, f.metadata["key"] or f.name) for f in dataclasses.fields(state) if f.metadata["scope"] == scope]


@dataclass
class RunState(Checkpointed):
    last_loss: torch.Tensor = kept(LOCAL)     # most recent known loss per training example (inf = never seen)
    counts: torch.Tensor = kept(LOCAL)        # times each example was backpropagated
    epoch: int = kept(SHARED, default=0)      # epochs completed
    # the counters of the completed epochs (the current one's are in EpochState; `usage` adds them)
    totals: Dict[str, float] = kept(SHARED, default_factory=lambda: {k: 0.0 for k in TOTALS})
    rows: List[Dict] = kept(SHARED, default_factory=list)          # metrics.csv
    snapshots: Dict[str, torch.Tensor] = kept(SHARED, default_factory=dict)
    lr: float = kept(SHARED, default=0.0)
    stop_reason: Optional[str] = kept(SHARED, default=None)  # epochs | hours | budget, once the run has ended
    # Evaluation grid (eval.every): grid points evaluated so far, the interval counters of the
    # epochs completed since the last row, and the sampler's latest end-of-epoch columns.
    evals: int = kept(SHARED, default=0)
    pending: Dict[str, float] = kept(SHARED, default_factory=dict)
    extra: Dict[str, float] = kept(SHARED, default_factory=dict)
    clock0: float = kept(RUNTIME, default=0.0)   # perf_counter() at which wall_time was 0

    @classmethod
    def new(cls, n: int, device: torch.device, lr: float) -> "RunState":
        return cls(torch.full((n,), float("inf"), device=device), torch.zeros(n, dtype=torch.int64, device=device),
                   lr=lr)


@dataclass
class EpochState(Checkpointed):
    """The epoch in progress. Counters marked (all) count every rank; the rest this rank."""
    epoch: int = kept(SHARED)
    queue: BackpropQueue = kept(LOCAL)
    loss_sum: torch.Tensor = kept(LOCAL)
    mislabeled: torch.Tensor = kept(LOCAL)
    chunk_index: int = kept(SHARED, "chunk", default=0)   # the next chunk to walk
    n_chunks: int = kept(SHARED, default=1)
    backprops: int = kept(LOCAL, default=0)
    global_backprops: int = kept(SHARED, default=0)       # (all)
    select_forwards: int = kept(SHARED, default=0)        # (all)
    proxy_backprops: int = kept(SHARED, default=0)        # (all) examples the proxy scorer trained on
    steps: int = kept(SHARED, default=0)                  # (all: every rank takes part in every step)
    loaded: int = kept(SHARED, default=0)                 # (all) training examples read from storage
    # seconds before a resume or a grid evaluation
    phases: Dict[str, float] = kept(SHARED, default_factory=dict)
    visit: Optional[torch.Tensor] = kept(LOCAL, default=None)                   # the sampler's pass-through mask
    gen_states: Optional[Dict[str, torch.Tensor]] = kept(LOCAL, default=None)   # selection/augmentation streams
    # interval counters at this epoch's last row (eval.every)
    mark: Dict[str, float] = kept(SHARED, default_factory=dict)
    # rebuilt by loop.start_epoch:
    gen: Optional[torch.Generator] = kept(RUNTIME, default=None)   # this rank's selection stream
    step_s: float = kept(RUNTIME, default=0.0)                     # the last step's duration (seconds budgets)
    since_check: int = kept(RUNTIME, default=0)                    # steps since the last non-finite check
    nonfinite: Optional[torch.Tensor] = kept(RUNTIME, default=None)

    @classmethod
    def new(cls, epoch: int, batch_size: int, rank: int, device: torch.device) -> "EpochState":
        zero = torch.zeros((), device=device)
        return cls(epoch, BackpropQueue(batch_size, rank), zero.clone(), zero.clone(),
                   nonfinite=torch.zeros((), dtype=torch.bool, device=device))

    def walked(self, in_chunk: bool = False) -> float:
        """The fraction of the epoch's chunks walked (`in_chunk`: the current one counted as walked)."""
        return min(self.chunk_index + int(in_chunk), self.n_chunks) / max(self.n_chunks, 1)


def counted(run: RunState, ep: Optional[EpochState]) -> Dict[str, int]:
    """The run's EPOCH_COUNTERS up to `ep`'s position (None: up to the start of epoch run.epoch)."""
    return {k: int(run.totals[k]) + (0 if ep is None else getattr(ep, attr)) for k, attr in EPOCH_COUNTERS.items()}


def usage(run: RunState, ep: Optional[EpochState], seconds: float, extra_backprops: int = 0,
          in_chunk: bool = False) -> Usage:
    """What the run has spent up to `ep`'s position (None: the start of epoch run.epoch), with
    `seconds` of training time (`in_chunk`: the current chunk counted as walked;
    `extra_backprops`: a step about to be taken)."""
    c = counted(run, ep)
    return Usage(epochs=run.epoch + (0.0 if ep is None else ep.walked(in_chunk)),
                 select_forwards=c["select_forwards"], backprops=c["backprops"] + extra_backprops, seconds=seconds,
                 extra_work=run.totals["extra_work"], proxy_backprops=c["proxy_backprops"], loaded=c["loaded"])


def save(p: Parts, run: RunState, ep: EpochState, mid: bool) -> None:
    """Write a checkpoint of the run at `ep` (mid-epoch when `mid`; else `ep` is a fresh epoch)."""
    if not p.cfg.checkpoint.enabled:
        return
    local = {"sampler": p.sampler.state_dict(), **run.local(), "epoch": ep.local() if mid else None,
             # a queue carried into the next epoch (sampler.epoch_end=carry) is part of the state too
             "carried": ep.queue.state_dict() if not mid and len(ep.queue) else None}
    if p.proxy is not None:         # each rank's own: under DDP every rank's proxy trains on its share
        local["proxy"] = p.proxy.state_dict()
    ranks = p.dist.gather_state(local)
    if p.dist.rank != 0:
        return
    chunk_index = ep.chunk_index if mid else None
    payload = {
        "format": FORMAT,
        "config": to_dict(p.cfg),
        "world_size": p.dist.world,
        "epoch": ep.epoch,
        "chunk": chunk_index,
        "model": p.model.state_dict(),
        "optimizer": p.optimizer.state_dict(),
        "run": run.shared(),
        "epoch_state": ep.shared() if mid else None,
        "noisy": p.data.noisy.cpu(),
        "ranks": ranks,
        "rng": global_rng_state(),
    }
    ckpt.save(p.run_dir, payload, ckpt.tag(ep.epoch, chunk_index), p.cfg.checkpoint.keep)


def kept_rows(p: Parts, rows: List[Dict], epochs_done: int) -> List[Dict]:
    """The rows a continued run keeps. A row of a partial epoch (a run that ended on its budget
    mid-epoch) is dropped: the continued epoch writes its complete row. On an evaluation grid
    every saved row is a grid point (a run's final row is written after its last checkpoint)."""
    if p.cfg.eval.every is not None:
        return list(rows)
    return [r for r in rows if r["epoch"] <= epochs_done]


def check_payload(p: Parts, payload: dict) -> None:
    """Refuse a checkpoint this run cannot continue from, in one line that says why."""
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


def restore(p: Parts, payload: dict) -> Tuple[RunState, Optional[EpochState]]:
    """The run state (and the epoch in progress, for a mid-epoch checkpoint) of a checkpoint,
    loaded into the parts' model, optimizer and sampler."""
    check_payload(p, payload)
    p.model.load_state_dict(payload["model"])
    p.optimizer.load_state_dict(payload["optimizer"])
    local = p.dist.scatter_state(payload["ranks"])
    p.sampler.load_state_dict(local["sampler"])
    if p.proxy is not None:
        p.proxy.load_state_dict(local["proxy"])
    run = RunState.new(p.n, p.device, 0.0)
    run.load(LOCAL, local, p.device)
    run.load(SHARED, payload["run"], p.device)
    run.rows = kept_rows(p, run.rows, run.epoch)
    set_global_rng_state(payload["rng"])
    ep = None
    if local.get("carried") is not None:
        ep = EpochState.new(payload["epoch"], p.local_batch, p.dist.rank, p.device)
        ep.queue.load_state_dict(local["carried"], p.device)
    if payload["epoch_state"] is not None:
        ep = EpochState.new(payload["epoch"], p.local_batch, p.dist.rank, p.device)
        ep.load(SHARED, payload["epoch_state"], p.device)
        ep.load(LOCAL, local["epoch"], p.device)
    return run, ep

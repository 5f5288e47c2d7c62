"""Process-group plumbing for multi-process (torchrun/DDP) runs.

With one process every operation is the identity, so the training loop calls the same methods
whether or not it runs under torchrun. With N processes:
- each rank owns a fixed shard of the training set (examples rank, rank+N, ...), so Stale-SB's
  per-example loss cache is per shard and survives from epoch to epoch;
- every epoch has the same number of chunks on every rank (a shorter shard ends with a smaller
  or empty chunk), so the per-chunk collectives always pair up;
- the loss history, step composition, stop requests, budget and divergence decisions are made
  from gathered values, identically on every rank.

Ranks are numbered globally (RANK: rank 0 alone writes the run's files) and per node
(LOCAL_RANK: the GPU a rank trains on). torchrun exports both; a SLURM job whose tasks are one
run's ranks (hydra/launcher=slurm_ddp) gets them from submitit (`export_submitit_env`).
"""
from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Callable, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from .config import ConfigError
from .data import DataError, ImageSet

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This rank's number on its node (0 on every node's first rank)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def gpu_index() -> int:
    """This rank's GPU among those it sees: LOCAL_RANK, or 0 where the launcher gave each rank a
    GPU of its own (one visible device, e.g. SLURM's gpus_per_task=1)."""
    return 0 if torch.cuda.device_count() == 1 else local_rank()


def init_process_group(device: Optional[torch.device] = None) -> None:
    """Join the group once (env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): NCCL when this
    rank trains on a GPU, gloo otherwise."""
    if dist.is_initialized():
        return
    # Imported first, this module binds the default group into its functions' default arguments (DDP
    # imports it). The group would then outlive destroy_process_group, and gloo's worker threads with
    # it into interpreter shutdown, where a worker dropping the last reference to a tensor needs the GIL
    # and aborts the process (a rank's SIGABRT after its last epoch). Imported now, it binds None.
    import torch.distributed.nn.functional  # noqa: F401
    use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(device if device is not None and device.index is not None else gpu_index())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))


# --- submitit (hydra/launcher=slurm_ddp): every task of the job is one rank ----------------------

def export_submitit_env() -> None:
    """Give this task of a multi-task submitit job the variables torchrun would have: RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE from the job's tasks (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID under
    SLURM), MASTER_ADDR the job's first node, MASTER_PORT one derived from the job id (or the one set).
    CUDA_VISIBLE_DEVICES stays: a rank picks its node's GPU by LOCAL_RANK (gpu_index)."""
    if launched_by_torchrun():
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise ConfigError("a multi-task submitit job is invalid without submitit>=1.5; allowed: "
                          "pip install 'sbrun[cluster]'") from None
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def agree_on(value: str) -> str:
    """Rank 0's value of `value`, on every rank (e.g. the run directory's timestamp)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Collective:
    def __init__(self, rank: int = 0, world: int = 1, device: Optional[torch.device] = None):
        self.rank = rank
        self.world = world
        self.device = device or torch.device("cpu")

    @classmethod
    def single(cls) -> "Collective":
        return cls(0, 1)

    @classmethod
    def from_env(cls, device: torch.device) -> "Collective":
        """Join the torchrun process group (gloo on CPU, NCCL on CUDA), or run alone."""
        if not launched_by_torchrun():
            return cls.single()
        init_process_group(device)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    @property
    def active(self) -> bool:
        return self.world > 1

    # --- data -------------------------------------------------------------------------------------

    def shard(self, n: int) -> Optional[torch.Tensor]:
        """This rank's fixed set of training indices (None = all of them)."""
        return torch.arange(self.rank, n, self.world) if self.active else None

    def in_turn(self, load: Callable[[], T]) -> T:
        """`load()` on every rank: rank 0 first, then the first rank of each other node, then the rest,
        so a dataset missing from a shared folder (or from each node's own disk) is downloaded once
        there, never by several ranks into one folder at once. A rank's DataError or ConfigError
        stops every rank (the others say so) instead of leaving them waiting in a collective."""
        if not self.active:
            return load()
        mine = 0 if self.rank == 0 else 1 if local_rank() == 0 else 2
        out, error = None, None
        for turn in range(3):
            if turn == mine:
                try:
                    out = load()
                except (DataError, ConfigError) as err:
                    error = err
            if self.any(error is not None):
                raise error or DataError("another rank could not load the data; its error is in its log")
        return out

    def local_size(self, size: int) -> int:
        """Each rank's share of a global batch of `size` examples."""
        return max(1, math.ceil(size / self.world))

    def shard_set(self, s: ImageSet) -> ImageSet:
        if not self.active:
            return s
        idx = torch.arange(self.rank, len(s), self.world, device=s.labels.device)
        return s.take(idx)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    # --- reductions --------------------------------------------------------------------------------

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_min(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def any(self, flag: bool) -> bool:
        if not self.active:
            return bool(flag)
        t = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather_ints(self, values: Sequence[int]) -> List[List[int]]:
        """Every rank's small integer vector, in rank order (one collective)."""
        if not self.active:
            return [list(values)]
        t = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.tolist() for o in out]

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D tensor (lengths may differ) in rank order, keeping its dtype."""
        if not self.active:
            return t
        lengths = [n for n, in self.gather_ints([t.numel()])]
        padded = torch.zeros(max(lengths), device=t.device, dtype=t.dtype)
        padded[: t.numel()] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, lengths)])

    def gather_objects(self, value) -> list:
        """Every rank's small picklable `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    # --- checkpoint state --------------------------------------------------------------------------

    def gather_state(self, local: dict) -> Optional[List[dict]]:
        """Every rank's state on rank 0 (None on the others)."""
        if not self.active:
            return [local]
        cpu = _to_cpu(local)
        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(cpu, out, dst=0)
        return out

    def scatter_state(self, ranks: List[dict]) -> dict:
        return ranks[self.rank]

    def close(self) -> None:
        """Destroy the group: with no DDP wrapper left (each holds the group), this also joins gloo's
        worker threads, so none is left to run while Python shuts down (see init_process_group)."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj

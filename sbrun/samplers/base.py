"""The contract between the training loop and a sampler.

For each selection batch ("chunk") of training indices the loop asks the sampler what it needs
(`need`): nothing, the examples' cached losses, or fresh losses from a selection forward. It then
hands those losses to `select`, which answers which positions of the chunk to backpropagate
(with optional loss weights). The loop queues the chosen examples into backprop batches; it never
looks at which sampler it is running.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Type

import torch

from ..config import SamplerConfig
from ..distributed import Collective


class Need(enum.Enum):
    NONE = "none"        # decide without losses
    CACHED = "cached"    # each example's most recent known loss
    FRESH = "fresh"      # a selection forward on this chunk


@dataclass
class Ctx:
    epoch: int
    batch: int          # index of the chunk within the epoch
    progress: float     # fraction of the run's epochs done when this chunk starts
    generator: torch.Generator


@dataclass
class Selection:
    pos: Optional[torch.Tensor]             # positions into the chunk; None = every example
    weight: Optional[torch.Tensor] = None   # per-selected-example loss weight; None = plain mean

    @staticmethod
    def everything() -> "Selection":
        return Selection(None)


class Sampler:
    """Default behaviour: Traditional training (backprop everything, never look at losses)."""

    def __init__(self, cfg: SamplerConfig, n_train: int, batch_size: int, device: torch.device,
                 dist: Optional[Collective] = None):
        self.cfg = cfg
        self.n_train = n_train
        self.batch_size = batch_size    # this rank's share of a backprop batch
        self.device = device
        self.dist = dist or Collective.single()

    def chunk_size(self, select_size: int) -> int:
        return select_size

    def describe(self) -> Dict[str, Optional[float]]:
        """The knobs that identify this sampler's configuration in tables and legends, with the
        expected backprop fraction ("selectivity"). None where a knob does not apply."""
        return {"beta": None, "staleness": None, "selectivity": 1.0}

    def priming(self, ctx: Ctx) -> bool:
        return ctx.epoch < self.cfg.prime_epochs

    def need(self, ctx: Ctx) -> Need:
        return Need.NONE

    def select(self, losses: Optional[torch.Tensor], n: int, ctx: Ctx) -> Selection:
        return Selection.everything()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the selection forward (Composer downsamples it)."""
        return x

    def observe(self, losses: torch.Tensor) -> None:
        """Per-example losses of each training forward, in step order."""

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        """Once per epoch (host syncs allowed). Returns extra CSV columns."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SAMPLERS: Dict[str, Type[Sampler]] = {}


def register(*names: str) -> Callable[[Type[Sampler]], Type[Sampler]]:
    def deco(cls: Type[Sampler]) -> Type[Sampler]:
        for name in names:
            SAMPLERS[name] = cls
        return cls
    return deco


register("traditional")(Sampler)


def build_sampler(cfg: SamplerConfig, n_train: int, batch_size: int, device: torch.device,
                  dist: Optional[Collective] = None) -> Sampler:
    return SAMPLERS[cfg.name](cfg, n_train, batch_size, device, dist)

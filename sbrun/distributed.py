"""Process-group plumbing. With one process every operation is the identity, so the training
loop calls the same methods whether or not it runs under torchrun."""
from __future__ import annotations

from typing import List, Optional

import torch

from .datasets import ImageSet


class Collective:
    def __init__(self, rank: int = 0, world: int = 1):
        self.rank = rank
        self.world = world

    @classmethod
    def single(cls) -> "Collective":
        return cls(0, 1)

    def shard(self, n: int) -> Optional[torch.Tensor]:
        """This rank's fixed set of training indices (None = all of them)."""
        return None

    def shard_set(self, s: ImageSet) -> ImageSet:
        return s

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_min(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def gather_state(self, local: dict) -> Optional[List[dict]]:
        return [local]

    def scatter_state(self, ranks: List[dict]) -> dict:
        return ranks[self.rank]

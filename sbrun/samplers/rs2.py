"""RS2 (Okanovic et al., "Repeated Random Sampling for Minimizing the Time-to-Accuracy of Learning";
reference PatrikOkanovic/RS2): each epoch trains on a fresh uniform subset of round(fraction * N)
examples, drawn without replacement across epochs until the data is exhausted.

Facts from the reference (DeepCore `methods/uniform_no_replacement.py`, `main.py`); the code is ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..config import check
from ..seeding import generator
from . import rules
from .base import Sampler, SamplerConfig
from .baselines import _fraction_or_sbs


@dataclass
class RS2Config(SamplerConfig):
    name: str = "rs2"
    beta: float = 2.0
    fraction: Optional[float] = None    # null = 1/(1+beta): SB's expected rate, so the two compare at equal selectivity
    prime_epochs: int = 0               # the reference has no priming

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "beta", self.beta, "a number > 0")
        check(self.fraction is None or 0.0 < self.fraction <= 1.0, "sampler.fraction", self.fraction,
              "null or a number in (0, 1]")

    @property
    def kept(self) -> float:
        return _fraction_or_sbs(self.fraction, self.beta)

    def make(self, env):
        return RS2(self, env)

    def describe(self):
        return {"beta": self.beta if self.fraction is None else None, "staleness": None, "selectivity": self.kept}


class RS2(Sampler):
    """The epoch's subset is a window of a seeded permutation (rules.rs2_window): a pure function
    of (seed, epoch), so every rank draws the same subset and a resumed run the same schedule.
    No scoring: every visited example is backpropagated."""

    def __init__(self, cfg: RS2Config, env):
        super().__init__(cfg, env)
        self.size = max(1, round(cfg.kept * env.n_train))
        self.stats: Dict[str, float] = {}

    def subset(self, epoch: int) -> torch.Tensor:
        """Training-set indices of this epoch's subset (counting selective epochs from 0)."""
        pas, start, end = rules.rs2_window(epoch, self.env.n_train, self.size)
        perm = torch.randperm(self.env.n_train, generator=generator("cpu", self.env.seed, "rs2", pas))
        return rules.rs2_subset(perm, start, end)

    def visit(self, epoch: int, progress: float, generator_: torch.Generator) -> Optional[torch.Tensor]:
        if epoch < self.cfg.prime_epochs:
            self.stats = {"subset_frac": 1.0}
            return None
        mask = torch.zeros(self.env.n_train, dtype=torch.bool)
        mask[self.subset(epoch - self.cfg.prime_epochs)] = True
        self.stats = {"subset_frac": int(mask.sum()) / self.env.n_train}
        return mask

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        return dict(self.stats)

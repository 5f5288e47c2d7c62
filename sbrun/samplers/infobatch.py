"""InfoBatch (Qin et al., ICLR 2024): prune well-learned examples at epoch start, rescale the rest.

Facts from the paper and its reference implementation (NUS-HPC-AI-Lab/InfoBatch); the code is ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..config import check
from . import rules
from .base import Ctx, Observation, Sampler, SamplerConfig, Selection

# describe()'s nominal share of examples below the mean score. The real share is data-dependent
# (losses are right-skewed, so usually more than half lie below their mean).
NOMINAL_BELOW_MEAN = 0.5


@dataclass
class InfoBatchConfig(SamplerConfig):
    name: str = "infobatch"
    prune_ratio: float = 0.5     # share of the well-learned examples skipped each epoch
    delta: float = 0.875         # prune while the epoch ends within this fraction of the run (the reference)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.prune_ratio < 1.0, "sampler.prune_ratio", self.prune_ratio, "a number in [0, 1)")
        check(0.0 <= self.delta <= 1.0, "sampler.delta", self.delta, "a number in [0, 1]")

    def make(self, env):
        return InfoBatch(self, env)

    def describe(self):
        # Nominal: prune_ratio of the (nominally half) examples below the mean, in delta of the run.
        return {"beta": None, "staleness": None,
                "selectivity": 1.0 - self.prune_ratio * NOMINAL_BELOW_MEAN * self.delta}


class InfoBatch(Sampler):
    """Score = each example's most recent training-forward loss (+inf until its first one, so the
    first epoch prunes nothing). At each epoch start, a random prune_ratio of the examples below
    the mean score are skipped (no forward at all); the kept ones among them get loss weight
    1 / (1 - prune_ratio). Skipped examples keep their old score. Every rank holds the global
    scores (global_observations) and draws the same mask from the shared visit generator.
    """

    global_observations = True

    def __init__(self, cfg: InfoBatchConfig, env):
        super().__init__(cfg, env)
        self.scores = torch.full((env.n_train,), float("inf"), device=self.device)
        self.weight: Optional[torch.Tensor] = None     # this epoch's loss weights; None = plain mean
        self.stats = {"pruned_frac": 0.0, "well_learned_frac": 0.0}

    def visit(self, epoch: int, progress: float, generator: torch.Generator) -> Optional[torch.Tensor]:
        self.weight = None
        self.stats = {"pruned_frac": 0.0, "well_learned_frac": 0.0}
        if epoch < self.cfg.prime_epochs or not rules.infobatch_prunes(epoch, progress, self.cfg.delta):
            return None
        visit, weight = rules.infobatch_prune(self.scores, self.cfg.prune_ratio, generator)
        n, pruned = self.env.n_train, int((~visit).sum())
        self.stats = {"pruned_frac": pruned / n, "well_learned_frac": int(rules.well_learned(self.scores).sum()) / n}
        if pruned == 0:     # nothing below the mean (the first epoch) or prune_ratio 0: every weight is 1
            return None
        self.weight = weight
        return visit

    def select(self, losses, ctx: Ctx) -> Selection:
        return Selection(None, None if self.weight is None else self.weight[ctx.idx])

    def observe(self, obs: Observation) -> None:
        if obs.trained:
            self.scores[obs.idx] = obs.losses.detach().float()

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        return dict(self.stats)

    def state_dict(self) -> dict:
        return {"scores": self.scores.clone(), "weight": None if self.weight is None else self.weight.clone(),
                "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self.scores = state["scores"].to(self.device)
        self.weight = None if state["weight"] is None else state["weight"].to(self.device)
        self.stats = {k: float(v) for k, v in state["stats"].items()}

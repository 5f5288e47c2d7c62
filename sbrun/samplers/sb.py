"""Selective-Backprop and Stale-SB (Jiang et al. 2019)."""
from __future__ import annotations

from typing import Optional

import torch

from . import rules
from ..selection import LossHistory
from .base import Ctx, Need, Sampler, Selection, register


@register("sb", "stale_sb")
class SelectiveBackprop(Sampler):
    """Keep each example with probability percentile(loss)^beta.

    With staleness n > 1 (Stale-SB), selection forwards run only every n-th epoch after priming;
    in between, each example's most recent known loss (from its last selection forward, or its
    last training forward if it was backpropagated since) drives the same rule.
    """

    def __init__(self, cfg, n_train, batch_size, device, dist=None):
        super().__init__(cfg, n_train, batch_size, device, dist)
        self.history = LossHistory(cfg.history, device)

    def describe(self):
        return {"beta": self.cfg.beta, "staleness": self.cfg.staleness,
                "selectivity": rules.expected_fraction(self.cfg.beta)}

    def need(self, ctx: Ctx) -> Need:
        if self.priming(ctx):
            return Need.NONE
        fresh = (ctx.epoch - self.cfg.prime_epochs) % self.cfg.staleness == 0
        return Need.FRESH if fresh else Need.CACHED

    def select(self, losses: Optional[torch.Tensor], n: int, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        # Every rank appends every rank's losses: one global window, so percentiles are global.
        self.history.append(self.dist.gather_cat(losses))
        probs = rules.sb_probabilities(losses, self.history.window(), self.cfg.beta, self.cfg.min_prob)
        pos = rules.bernoulli_keep(probs, ctx.generator).nonzero().squeeze(1)
        weight = rules.bernoulli_weights(probs)[pos] if self.cfg.reweight else None
        return Selection(pos, weight)

    def state_dict(self) -> dict:
        return {"history": self.history.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.history.load_state_dict(state["history"])

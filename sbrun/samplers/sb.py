"""Selective-Backprop and Stale-SB (Jiang et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .. import selection
from ..config import check
from . import rules
from .base import Ctx, Need, Sampler, SamplerConfig, Selection


@dataclass
class SBConfig(SamplerConfig):
    name: str = "sb"
    beta: float = 2.0            # selectivity: expected backprop fraction 1/(1+beta)
    history: int = 1024          # length R of the loss-percentile window
    min_prob: float = 0.0        # floor on the selection probability
    staleness: int = 1           # scoring forwards every `staleness` epochs (1 = plain SB)
    prime_epochs: int = 1
    reweight: bool = False       # importance weights 1/(N p), normalised to mean 1
    # Fidelity to the authors' code (docs/samplers-and-fidelity.md); sbrun's defaults first.
    cadence: str = "sbrun"       # sbrun: fresh scoring in selective epochs 0, n, 2n, ...; authors: n-1, 2n-1, ...
    prime_scoring: bool = False  # run (and count) scoring forwards during priming, as the authors' code does
    # loss: SB's rule. random: the rule decides only how many of each chunk to keep, and that many are
    # drawn uniformly (a control matched to SB in scoring, count and schedule: docs/samplers-and-fidelity.md)
    choose: str = "loss"
    steps_per_chunk: Optional[int] = None   # null: every full batch waiting; 1: one step per chunk (the authors)
    stale_chunks: int = 1        # stale epochs' chunks hold this many selection batches (the authors: 5)
    scores: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "beta", self.beta, "a number > 0")
        check(self.cadence in ("sbrun", "authors"), "sampler.cadence", self.cadence, "sbrun, authors")
        check(self.choose in ("loss", "random"), "sampler.choose", self.choose, "loss, random")
        check(not (self.reweight and self.choose == "random"), "sampler.reweight", self.reweight,
              "false when sampler.choose=random (its weights belong to the loss-based choice)")
        check(self.history >= 1, "sampler.history", self.history, "an integer >= 1")
        check(0.0 <= self.min_prob <= 1.0, "sampler.min_prob", self.min_prob, "a number in [0, 1]")
        check(self.staleness >= 1, "sampler.staleness", self.staleness, "an integer >= 1")
        check(self.steps_per_chunk is None or self.steps_per_chunk >= 1, "sampler.steps_per_chunk",
              self.steps_per_chunk, "null or an integer >= 1")
        check(self.stale_chunks >= 1, "sampler.stale_chunks", self.stale_chunks, "an integer >= 1")

    def make(self, env):
        return SBSampler(self, env)

    def describe(self):
        return {"beta": self.beta, "staleness": self.staleness,
                "selectivity": rules.expected_fraction(self.beta)}


class SBSampler(Sampler):
    """Keep each example with probability percentile(loss)^beta.

    With staleness n > 1 (Stale-SB), scoring forwards run only every n-th epoch after priming;
    in between, each example's most recent known loss (from its last scoring forward, or its
    last training forward if it was backpropagated since) drives the same rule.
    The rule and its loss window are the public `sbrun.SelectiveBackprop`, so a user's own loop
    and the runner select identically.
    """

    global_losses = True    # one global window under DDP, so percentiles are global

    def __init__(self, cfg: SBConfig, env):
        super().__init__(cfg, env)
        self.rule = selection.SelectiveBackprop(beta=cfg.beta, history=cfg.history, min_prob=cfg.min_prob,
                                                device=env.device)
        self.steps_per_chunk = cfg.steps_per_chunk

    def stale(self, epoch: int) -> bool:
        """Whether `epoch` decides on cached losses (after priming, between fresh epochs)."""
        return epoch >= self.cfg.prime_epochs and not fresh_epoch(epoch - self.cfg.prime_epochs,
                                                                    self.cfg.staleness, self.cfg.cadence)

    def epoch_chunk(self, epoch: int, chunk: int) -> int:
        # The authors' forward queue holds stale examples until more than 4 batches wait, so their
        # stale epochs select (and update the percentile window) per 5 batches: 640 examples
        return chunk * self.cfg.stale_chunks if self.stale(epoch) else chunk

    def need(self, ctx: Ctx) -> Need:
        if self.priming(ctx):
            return Need.FRESH if self.cfg.prime_scoring else Need.NONE
        return Need.CACHED if self.stale(ctx.epoch) else Need.FRESH

    def select(self, losses: Optional[torch.Tensor], ctx: Ctx) -> Selection:
        if losses is None or self.priming(ctx):
            return Selection.everything()
        probs = self.rule.probabilities(losses, observed=ctx.window)
        pos = rules.bernoulli_keep(probs, ctx.generator).nonzero().squeeze(1)
        if self.cfg.choose == "random":
            pos = rules.uniform_positions(probs.numel(), pos.numel(), ctx.generator)
        weight = rules.bernoulli_weights(probs)[pos] if self.cfg.reweight else None
        return Selection(pos, weight)

    def state_dict(self) -> dict:
        return {"rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rule.load_state_dict(state["rule"])


def fresh_epoch(selective: int, staleness: int, cadence: str = "sbrun") -> bool:
    """Whether the `selective`-th epoch after priming (0-based) scores afresh. sbrun scores its
    first selective epoch and every n-th after it; the authors' per-example counter scores epochs
    n-1, 2n-1, ... of them, so their first selective epoch decides on the priming epoch's training
    losses."""
    if cadence == "authors":
        return (selective + 1) % staleness == 0
    return selective % staleness == 0

"""Selective-Backprop and Stale-SB (Jiang et al. 2019)."""
from __future__ import annotations

from typing import Optional

import torch

from . import rules
from .base import Ctx, Need, Sampler, Selection, register


class LossHistory:
    """Ring buffer of the most recent `size` losses, kept on the device.

    Appending is one scatter; the fill level is tracked on the host (it depends only on how many
    losses were appended, never on their values), so reading the window needs no sync.
    """

    def __init__(self, size: int, device: torch.device):
        self.size = size
        self.buf = torch.zeros(size, device=device)
        self.ptr = 0
        self.filled = 0
        self._ar = torch.arange(size, device=device)

    def append(self, losses: torch.Tensor) -> None:
        losses = losses.detach().float().reshape(-1)
        n = losses.numel()
        if n >= self.size:
            self.buf.copy_(losses[n - self.size:])
            self.ptr, self.filled = 0, self.size
            return
        pos = (self._ar[:n] + self.ptr) % self.size
        self.buf[pos] = losses
        self.ptr = (self.ptr + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def window(self) -> torch.Tensor:
        return self.buf[: self.filled]

    def state_dict(self) -> dict:
        return {"buf": self.buf.clone(), "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        self.buf.copy_(state["buf"].to(self.buf.device))
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])


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

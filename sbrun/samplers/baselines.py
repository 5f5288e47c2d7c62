"""Controls and comparators that share SB's loop: random, topk, kath18 and composer."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from . import rules
from .base import Ctx, Need, Sampler, Selection, register


def _fraction_or_sbs(fraction, beta: float) -> float:
    """A configured fraction, or (null) SB's expected fraction 1/(1+beta) at this beta."""
    return fraction if fraction is not None else rules.expected_fraction(beta)


def _describe_fraction(fraction, beta: float):
    """beta identifies the configuration only when it sets the fraction."""
    return {"beta": beta if fraction is None else None, "staleness": None,
            "selectivity": _fraction_or_sbs(fraction, beta)}


@register("random")
class RandomSubset(Sampler):
    """Keep each example with a fixed probability (default 1/(1+beta), SB's expected fraction).

    Same number of backprops as SB, chosen without looking at losses: the control that tells
    "which examples" apart from "how many".
    """

    @property
    def prob(self) -> float:
        return _fraction_or_sbs(self.cfg.prob, self.cfg.beta)

    def describe(self):
        return _describe_fraction(self.cfg.prob, self.cfg.beta)

    def select(self, losses, n: int, ctx: Ctx) -> Selection:
        if self.priming(ctx):
            return Selection.everything()
        probs = torch.full((n,), self.prob, device=self.device)
        return Selection(rules.bernoulli_keep(probs, ctx.generator).nonzero().squeeze(1))


@register("topk")
class TopK(Sampler):
    """Keep the highest-loss fraction `keep` of each selection batch, deterministically."""

    @property
    def keep(self) -> float:
        return _fraction_or_sbs(self.cfg.keep, self.cfg.beta)

    def describe(self):
        return _describe_fraction(self.cfg.keep, self.cfg.beta)

    def need(self, ctx: Ctx) -> Need:
        return Need.NONE if self.priming(ctx) else Need.FRESH

    def select(self, losses, n: int, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        return Selection(rules.topk_positions(losses, rules.kept_count(n, self.keep)))


@register("composer")
class ComposerSB(TopK):
    """MosaicML Composer's SelectiveBackprop variant.

    Inside [start, end) of training, except on every `interrupt`-th batch, it draws int(keep*N)
    examples without replacement with probability proportional to rank-percentile^(1/keep - 1);
    its selection forward may see inputs downsampled by `scale_factor`.
    """

    def need(self, ctx: Ctx) -> Need:
        if self.priming(ctx):
            return Need.NONE
        c = self.cfg
        active = rules.composer_active(ctx.progress, ctx.batch, c.start, c.end, c.interrupt)
        return Need.FRESH if active else Need.NONE

    def select(self, losses, n: int, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        if n == 0:
            return Selection(torch.empty(0, dtype=torch.long, device=self.device))
        return Selection(rules.rank_select(losses, self.keep, ctx.generator))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.scale_factor
        if s >= 1.0 or x.dim() != 4:
            return x
        return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)


@register("kath18")
class Kath18(Sampler):
    """Katharopoulos & Fleuret 2018 loss-proportional importance sampling, as the SB paper ran it.

    Each chunk is a presample pool of B = pool_factor * batch_size examples; once started, the
    sampler draws batch_size of them with replacement, with probability proportional to loss.
    "Variable start": until the moving average of the variance-reduction estimate exceeds tau_th
    (checked once per epoch) training is uniform, and the estimate is fed from the training
    forwards' losses grouped into pools of B, so the uniform phase costs no extra forwards.
    """

    def __init__(self, cfg, n_train, batch_size, device, dist=None):
        super().__init__(cfg, n_train, batch_size, device, dist)
        self.pool = cfg.pool_factor * batch_size
        self.tau_th = cfg.tau_th if cfg.tau_th is not None else rules.tau_threshold(self.pool, batch_size)
        self.active = not cfg.variable_start
        self.vr_ema = torch.zeros((), device=device)
        self.updates = 0
        self._pending = torch.zeros(self.pool, device=device)
        self._filled = 0

    def chunk_size(self, select_size: int) -> int:
        return self.pool

    def describe(self):
        return {"beta": None, "staleness": None, "selectivity": 1.0 / self.cfg.pool_factor}

    def need(self, ctx: Ctx) -> Need:
        return Need.FRESH if self.active and not self.priming(ctx) else Need.NONE

    def _update_estimate(self, pool_losses: torch.Tensor) -> None:
        m = self.cfg.vr_momentum
        self.vr_ema = m * self.vr_ema + (1 - m) * rules.variance_reduction(pool_losses)
        self.updates += 1

    def select(self, losses, n: int, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        if n == 0:
            return Selection(torch.empty(0, dtype=torch.long, device=self.device))
        self._update_estimate(losses)
        probs = rules.loss_proportional(losses)
        # A full pool yields one batch; the epoch's last, smaller pool keeps the same ratio.
        k = self.batch_size if n == self.pool else max(1, round(n * self.batch_size / self.pool))
        drawn = rules.sample_with_replacement(probs, k, ctx.generator)
        weight = rules.pool_weights(probs, drawn) if self.cfg.reweight else None
        return Selection(drawn, weight)

    def observe(self, losses: torch.Tensor) -> None:
        if self.active:
            return
        losses = losses.detach().float().reshape(-1)
        while losses.numel():
            take = min(self.pool - self._filled, losses.numel())
            self._pending[self._filled:self._filled + take] = losses[:take]
            self._filled += take
            losses = losses[take:]
            if self._filled == self.pool:
                self._update_estimate(self._pending)
                self._filled = 0

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        # Ranks average their estimates so that they all start importance sampling together.
        estimate = float(self.dist.all_mean(self.vr_ema))
        if not self.active and self.updates > 0 and estimate > self.tau_th:
            self.active = True
        return {"vr_estimate": estimate, "is_active": float(self.active)}

    def state_dict(self) -> dict:
        return {"active": self.active, "vr_ema": self.vr_ema.clone(), "updates": self.updates,
                "pending": self._pending.clone(), "filled": self._filled}

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state["active"])
        self.vr_ema = state["vr_ema"].to(self.device)
        self.updates = int(state["updates"])
        self._pending.copy_(state["pending"].to(self.device))
        self._filled = int(state["filled"])


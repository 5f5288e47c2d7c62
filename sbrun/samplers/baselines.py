"""Controls and comparators that share SB's loop: random, topk, composer and kath18."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch

from ..config import check
from . import rules
from .base import Ctx, Need, Observation, Sampler, SamplerConfig, Selection


def _fraction_or_sbs(fraction, beta: float) -> float:
    """A configured fraction, or (null) SB's expected fraction 1/(1+beta) at this beta."""
    return fraction if fraction is not None else rules.expected_fraction(beta)


@dataclass
class _FractionConfig(SamplerConfig):
    """A kept fraction given directly, or (null) through SB's beta so it matches SB's rate."""
    beta: float = 2.0
    prime_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "beta", self.beta, "a number > 0")

    def _fraction(self) -> Optional[float]:
        raise NotImplementedError

    @property
    def fraction(self) -> float:
        return _fraction_or_sbs(self._fraction(), self.beta)

    def describe(self):
        # beta identifies the configuration only when it sets the fraction
        return {"beta": self.beta if self._fraction() is None else None, "staleness": None,
                "selectivity": self.fraction}


@dataclass
class RandomConfig(_FractionConfig):
    """Uniform-subset control: keep each example with probability `prob`."""
    name: str = "random"
    prob: Optional[float] = None     # null = 1/(1+beta), SB's expected fraction
    # Charge a scoring forward for every example SB would score (after priming), without running
    # it: counted in select_forwards and so in `work`, so that at equal work the control takes
    # SB's backprops and SB's lr schedule and differs from SB only in which examples it keeps.
    charge_scoring: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.prob is None or 0.0 < self.prob <= 1.0, "sampler.prob", self.prob, "null or a number in (0, 1]")

    def _fraction(self):
        return self.prob

    def make(self, env):
        return RandomSubset(self, env)


class RandomSubset(Sampler):
    """Same number of backprops as SB, chosen without looking at losses: the control that tells
    "which examples" apart from "how many". Matched to SB in cost too with `charge_scoring`
    (`sampler=random_matched`); otherwise, at equal work it backpropagates as much as Traditional."""

    def need(self, ctx: Ctx) -> Need:
        return Need.CHARGED if self.cfg.charge_scoring and not self.priming(ctx) else Need.NONE

    def select(self, losses, ctx: Ctx) -> Selection:
        if self.priming(ctx):
            return Selection.everything()
        probs = torch.full((ctx.idx.numel(),), self.cfg.fraction, device=self.device)
        return Selection(rules.bernoulli_keep(probs, ctx.generator).nonzero().squeeze(1))


@dataclass
class TopKConfig(_FractionConfig):
    """Keep the highest-loss fraction `keep` of each selection batch."""
    name: str = "topk"
    scores: ClassVar[bool] = True
    keep: Optional[float] = None     # null = 1/(1+beta)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.keep is None or 0.0 < self.keep <= 1.0, "sampler.keep", self.keep, "null or a number in (0, 1]")

    def _fraction(self):
        return self.keep

    def make(self, env):
        return TopK(self, env)


class TopK(Sampler):
    def need(self, ctx: Ctx) -> Need:
        return Need.NONE if self.priming(ctx) else Need.FRESH

    def select(self, losses, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        return Selection(rules.topk_positions(losses, rules.kept_count(losses.numel(), self.cfg.fraction)))


@dataclass
class ComposerConfig(SamplerConfig):
    """MosaicML Composer's SelectiveBackprop (its defaults)."""
    name: str = "composer"
    scores: ClassVar[bool] = True
    keep: float = 0.5
    start: float = 0.5           # fraction of training at which selection starts
    end: float = 0.9             # ... and ends
    interrupt: int = 2           # every `interrupt`-th batch is a plain step (0 = never)
    at_least_one: bool = True    # false: Composer's own int(keep * N), which may be 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.keep <= 1.0, "sampler.keep", self.keep, "a number in (0, 1]")
        check(0.0 <= self.start < self.end <= 1.0, "sampler.start", self.start,
              "0 <= sampler.start < sampler.end <= 1")
        check(self.interrupt >= 0, "sampler.interrupt", self.interrupt, "an integer >= 0")

    def make(self, env):
        return ComposerSB(self, env)

    def describe(self):
        return {"beta": None, "staleness": None, "selectivity": self.keep}


class ComposerSB(Sampler):
    """Inside [start, end) of training, except on every `interrupt`-th batch, draw int(keep*N)
    examples without replacement with probability proportional to rank-percentile^(1/keep - 1)."""

    def need(self, ctx: Ctx) -> Need:
        if self.priming(ctx):
            return Need.NONE
        c = self.cfg
        active = rules.composer_active(ctx.progress, ctx.chunk_index, c.start, c.end, c.interrupt)
        return Need.FRESH if active else Need.NONE

    def select(self, losses, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        if losses.numel() == 0:
            return Selection(torch.empty(0, dtype=torch.long, device=self.device))
        return Selection(rules.rank_select(losses, self.cfg.keep, ctx.generator, self.cfg.at_least_one))


@dataclass
class Kath18Config(SamplerConfig):
    """Katharopoulos & Fleuret 2018 loss-proportional importance sampling, as the SB paper ran it."""
    name: str = "kath18"
    scores: ClassVar[bool] = True
    pool_factor: int = 3         # presample pool B = pool_factor * batch_size
    reweight: bool = False       # importance weights 1/(B p)
    variable_start: bool = True  # uniform until the variance-reduction estimate passes tau_th
    tau_th: Optional[float] = None   # null = (B + 3b) / (3b)
    vr_momentum: float = 0.9     # moving-average momentum of the estimate
    # Fidelity to the SB authors' Kath18 runs (docs/samplers-and-fidelity.md); sbrun's defaults first.
    dedupe: bool = False         # backprop each drawn example once (duplicates dropped): ~28% instead of 33%
    # pools: from training losses in pools of B; batches: eval-mode scoring, per batch while uniform (the authors)
    estimate: str = "pools"
    latch: bool = True           # false: re-check the start condition every epoch (it can switch off again)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pool_factor >= 1, "sampler.pool_factor", self.pool_factor, "an integer >= 1")
        check(self.estimate in ("pools", "batches"), "sampler.estimate", self.estimate, "pools, batches")
        check(not (self.dedupe and self.reweight), "sampler.dedupe", self.dedupe,
              "false when sampler.reweight is true (the weights assume draws with replacement)")
        check(self.tau_th is None or self.tau_th > 0, "sampler.tau_th", self.tau_th, "null or a number > 0")
        check(0.0 <= self.vr_momentum < 1.0, "sampler.vr_momentum", self.vr_momentum, "a number in [0, 1)")

    def make(self, env):
        return Kath18(self, env)

    def describe(self):
        return {"beta": None, "staleness": None, "selectivity": 1.0 / self.pool_factor}


class Kath18(Sampler):
    """Each chunk is a presample pool of B = pool_factor * batch_size examples; once started, the
    sampler draws batch_size of them with replacement, with probability proportional to loss.
    "Variable start": until the moving average of the variance-reduction estimate exceeds tau_th
    (checked once per epoch) training is uniform, and the estimate is fed from the training
    forwards' losses grouped into pools of B, so the uniform phase costs no extra forwards.
    Under DDP the estimate is fed from every rank's losses, so all ranks start together.
    """

    global_losses = True
    global_observations = True

    def __init__(self, cfg: Kath18Config, env):
        super().__init__(cfg, env)
        b = env.batch_size
        self.pool = cfg.pool_factor * b
        self.tau_th = cfg.tau_th if cfg.tau_th is not None else rules.tau_threshold(self.pool, b)
        self.active = not cfg.variable_start
        self.vr_ema = torch.zeros((), device=self.device)
        self.updates = 0
        self._pending = torch.zeros(self.pool, device=self.device)
        self._filled = 0

    def chunk_size(self, select_size: int) -> int:
        return self.pool

    def need(self, ctx: Ctx) -> Need:
        if self.priming(ctx):
            return Need.NONE
        # "batches": the authors score every batch in eval mode, started or not, for the estimate
        return Need.FRESH if self.active or self.cfg.estimate == "batches" else Need.NONE

    def update_estimate(self, pool_losses: torch.Tensor) -> None:
        m = self.cfg.vr_momentum
        self.vr_ema = m * self.vr_ema + (1 - m) * rules.variance_reduction(pool_losses)
        self.updates += 1

    def select(self, losses, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        n = losses.numel()
        if n == 0:
            return Selection(torch.empty(0, dtype=torch.long, device=self.device))
        scored = losses if ctx.window is None else ctx.window
        if self.cfg.estimate == "batches" and not self.active:
            # the authors' uniform phase (KathTrainer.train_all) updates per batch of b ...
            for part in scored.split(self.env.batch_size):
                self.update_estimate(part)
        else:
            # ... and once started, once per pool (KathTrainer.get_batch), as sbrun always does
            self.update_estimate(scored)
        if not self.active:
            return Selection.everything()
        probs = rules.loss_proportional(losses)
        # A full pool yields one batch; the epoch's last, smaller pool keeps the same ratio.
        b = self.env.batch_size
        k = b if n == self.pool else max(1, round(n * b / self.pool))
        drawn = rules.sample_with_replacement(probs, k, ctx.generator)
        if self.cfg.dedupe:
            return Selection(drawn.unique())
        weight = rules.pool_weights(probs, drawn) if self.cfg.reweight else None
        return Selection(drawn, weight)

    def observe(self, obs: Observation) -> None:
        if self.active or not obs.trained or self.cfg.estimate == "batches":
            return
        losses = obs.losses.detach().float().reshape(-1)
        while losses.numel():
            take = min(self.pool - self._filled, losses.numel())
            self._pending[self._filled:self._filled + take] = losses[:take]
            self._filled += take
            losses = losses[take:]
            if self._filled == self.pool:
                self.update_estimate(self._pending)
                self._filled = 0

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        estimate = float(self.vr_ema)
        if self.updates > 0 and (not self.active or not self.cfg.latch):
            self.active = estimate > self.tau_th
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

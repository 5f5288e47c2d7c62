"""KAKURENBO (Thao Nguyen et al., NeurIPS 2023): hide confidently learned low-loss examples for an
epoch, raise the learning rate to match, and re-score the hidden ones at the epoch's end.

Facts from the paper and its reference scripts (TruongThaoNguyen/kakurenbo, which has no license:
facts only); the code is ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional

import torch

from ..config import check, one_of
from . import rules
from .base import Observation, Sampler, SamplerConfig

LR_SCALES = ["fraction", "hidden", "none"]


@dataclass
class KakurenboConfig(SamplerConfig):
    name: str = "kakurenbo"
    fraction: float = 0.3                  # F: at most this share of the training set is hidden per epoch
    tau: float = 0.7                       # hide only predictions correct with softmax confidence >= tau
    decay_at: Optional[List[float]] = None  # where F_e steps down; null = the lr schedule's drops (epochs)
    lr_scale: str = "fraction"             # lr x 1/(1 - F_e) | x 1/(1 - hidden share) | none
    # its end-of-epoch forward over hidden examples follows selection_forward (the reference: train mode)
    scores: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.fraction < 1.0, "sampler.fraction", self.fraction, "a number in [0, 1)")
        check(0.0 <= self.tau <= 1.0, "sampler.tau", self.tau, "a number in [0, 1]")
        if self.decay_at is not None:
            d = list(self.decay_at)
            check(all(0.0 < x < 1.0 for x in d) and d == sorted(d), "sampler.decay_at", d,
                  "null or increasing fractions of the run in (0, 1)")
        one_of("sampler.lr_scale", self.lr_scale, LR_SCALES)

    def make(self, env):
        return Kakurenbo(self, env)

    def describe(self):
        # Nominal lower bound: at most F is hidden (less once F decays, and only confident examples).
        return {"beta": None, "staleness": None, "selectivity": 1.0 - self.fraction}


class Kakurenbo(Sampler):
    """Per example, the last known loss, prediction correctness and softmax confidence (over the
    classes) from its most recent forward, training or re-scoring. At each epoch start, once every
    example has been seen, the int(F_e * N) lowest-loss examples that were predicted correctly with
    confidence >= tau are hidden for the epoch (no forward); the epoch's lr is multiplied by
    1 / (1 - F_e); at the epoch's end the hidden examples get a forward-only pass (`rescore`) that
    refreshes their statistics. F_e steps down to 0.8F, 0.6F, 0.4F at the first three lr drops.
    Every rank holds the global statistics (global_observations), so all hide the same examples.
    """

    global_observations = True
    wants_predictions = True

    def __init__(self, cfg: KakurenboConfig, env):
        super().__init__(cfg, env)
        n, dev = env.n_train, self.device
        self.loss = torch.full((n,), float("inf"), device=dev)
        self.correct = torch.zeros(n, dtype=torch.bool, device=dev)
        self.confidence = torch.zeros(n, device=dev)
        self.seen = torch.zeros(n, dtype=torch.bool, device=dev)
        self.hidden: Optional[torch.Tensor] = None   # this epoch's hidden mask; None = nothing hidden
        self.epoch_stats = {"hidden_frac": 0.0, "hide_fraction": 0.0, "lr_factor": 1.0}

    def fraction_at(self, epoch: int, progress: float) -> float:
        """F_e: by the lr schedule's drops in epochs passed through, or by `decay_at` fractions."""
        cfg = self.cfg
        if cfg.decay_at is None:
            return rules.kakurenbo_fraction(cfg.fraction, epoch, self.env.lr_milestones)
        return rules.kakurenbo_fraction(cfg.fraction, progress, cfg.decay_at)

    def visit(self, epoch: int, progress: float, generator: torch.Generator) -> Optional[torch.Tensor]:
        self.hidden = None
        self.epoch_stats = {"hidden_frac": 0.0, "hide_fraction": 0.0, "lr_factor": 1.0}
        # Nothing is hidden before every example has a loss and a prediction (the reference's
        # first epoch trains on everything, at the plain lr).
        if epoch < self.cfg.prime_epochs or not bool(self.seen.all()):
            return None
        f_e = self.fraction_at(epoch, progress)
        hidden = rules.kakurenbo_hide(self.loss, self.correct, self.confidence, f_e, self.cfg.tau)
        share = int(hidden.sum()) / self.env.n_train
        scale = {"fraction": f_e, "hidden": share, "none": 0.0}[self.cfg.lr_scale]
        self.epoch_stats = {"hidden_frac": share, "hide_fraction": f_e, "lr_factor": rules.hidden_lr_factor(scale)}
        self.hidden = hidden if share > 0 else None
        return None if self.hidden is None else ~hidden

    def lr_factor(self, epoch: int) -> float:
        return self.epoch_stats["lr_factor"]

    def observe(self, obs: Observation) -> None:
        idx = obs.idx
        self.loss[idx] = obs.losses.detach().float()
        self.correct[idx] = obs.correct
        self.confidence[idx] = obs.confidence.float()
        self.seen[idx] = True

    def rescore(self, epoch: int) -> Optional[torch.Tensor]:
        return None if self.hidden is None else self.hidden.nonzero().squeeze(1)

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        return dict(self.epoch_stats)

    def state_dict(self) -> dict:
        return {"loss": self.loss.clone(), "correct": self.correct.clone(), "confidence": self.confidence.clone(),
                "seen": self.seen.clone(), "hidden": None if self.hidden is None else self.hidden.clone(),
                "epoch_stats": dict(self.epoch_stats)}

    def load_state_dict(self, state: dict) -> None:
        dev = self.device
        self.loss, self.correct = state["loss"].to(dev), state["correct"].to(dev)
        self.confidence, self.seen = state["confidence"].to(dev), state["seen"].to(dev)
        self.hidden = None if state["hidden"] is None else state["hidden"].to(dev)
        self.epoch_stats = {k: float(v) for k, v in state["epoch_stats"].items()}

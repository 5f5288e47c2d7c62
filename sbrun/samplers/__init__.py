"""Samplers: which examples to backpropagate. Pure rules live in `rules`; each sampler is a
config dataclass (its `_target_`) plus one small class."""
from .base import Ctx, Need, Observation, Sampler, SamplerConfig, SamplerEnv, Selection, SubRun, TraditionalConfig
from .rules import loss_percentiles, sb_probabilities

__all__ = ["Ctx", "Need", "Observation", "Sampler", "SamplerConfig", "SamplerEnv", "Selection", "SubRun",
           "TraditionalConfig", "loss_percentiles", "sb_probabilities"]

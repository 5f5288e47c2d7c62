"""Samplers: which examples to backpropagate. Pure rules live in `rules`, one small class each."""
from .base import SAMPLERS, Ctx, Need, Sampler, Selection, build_sampler, register
from .rules import loss_percentiles, sb_probabilities
from . import baselines, sb  # noqa: F401  (registers the samplers)
from ..selection import LossHistory
from .sb import SelectiveBackprop

__all__ = ["SAMPLERS", "Ctx", "Need", "Sampler", "Selection", "build_sampler", "register",
           "loss_percentiles", "sb_probabilities", "LossHistory", "SelectiveBackprop"]

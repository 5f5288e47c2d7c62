"""Public callbacks into a run: what the benchmark, the tests and trackers attach to.

A run calls its own `Hooks` and the process-wide `GLOBAL` ones (for harnesses that drive the
real command line, e.g. "kill the process after step k"). Hooks observe; they must not change
what a run computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch


@dataclass
class StepInfo:
    epoch: int                 # 0-based epoch of the step
    step: int                  # steps taken in the whole run, this one included
    idx: torch.Tensor          # this rank's examples in the step
    total: int                 # examples in the step across ranks
    lr: float
    model: torch.nn.Module     # the bare model (after_step: gradients still in .grad)
    optimizer: torch.optim.Optimizer


@dataclass
class Hooks:
    before_step: List[Callable[[StepInfo], None]] = field(default_factory=list)
    after_step: List[Callable[[StepInfo], None]] = field(default_factory=list)
    on_epoch: List[Callable[[Dict], None]] = field(default_factory=list)        # each metrics row
    on_end: List[Callable[[str, Dict], None]] = field(default_factory=list)     # status, summary

    def call(self, event: str, *args) -> None:
        for fn in getattr(self, event) + getattr(GLOBAL, event):
            fn(*args)

    def wants(self, event: str) -> bool:
        return bool(getattr(self, event) or getattr(GLOBAL, event))


GLOBAL = Hooks()


def merged(*hooks: Optional[Hooks]) -> Hooks:
    out = Hooks()
    for h in hooks:
        if h is not None:
            for name in ("before_step", "after_step", "on_epoch", "on_end"):
                getattr(out, name).extend(getattr(h, name))
    return out

"""Callbacks into a run: what the trackers (`logger=`), the `callbacks` config group, the Python API
(`train(cfg, run_dir, hooks=...)`) and the benchmark attach to. Hooks observe; they must not change
what a run computes.

A callback is any object with methods named after EVENTS; `Hooks.subscribe` adds them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

EVENTS = ("on_start", "before_step", "after_step", "on_epoch", "on_end")


@dataclass(frozen=True)
class RunInfo:
    run_dir: Path
    config: Dict[str, Any]     # as summary.json records it (JSON types only)
    name: str
    rank: int = 0


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
    on_start: List[Callable[[RunInfo], None]] = field(default_factory=list)   # before training (or resuming)
    before_step: List[Callable[[StepInfo], None]] = field(default_factory=list)
    after_step: List[Callable[[StepInfo], None]] = field(default_factory=list)
    on_epoch: List[Callable[[Dict], None]] = field(default_factory=list)        # each metrics row
    on_end: List[Callable[[str, Dict], None]] = field(default_factory=list)     # status, summary
    ended: bool = field(default=False, init=False, repr=False)

    def subscribe(self, *callbacks: Any) -> Hooks:
        """Add each callback's methods named after an event (another Hooks: its lists)."""
        for cb in callbacks:
            for event in EVENTS:
                fn = getattr(cb, event, None)
                getattr(self, event).extend(fn if isinstance(fn, list) else [fn] if callable(fn) else [])
        return self

    def start(self, run: RunInfo) -> None:
        """on_start. If a callback cannot start, those started before it end as stopped (resumable),
        so no tracker run is left open."""
        try:
            self.call("on_start", run)
        except BaseException:
            self.call("on_end", "stopped", {})
            raise

    def call(self, event: str, *args) -> None:
        if event == "on_end":       # once, whichever way the run ends (a failing end falls into the failure path)
            if self.ended:
                return
            self.ended = True
        for fn in getattr(self, event):
            fn(*args)

    def wants(self, event: str) -> bool:
        return bool(getattr(self, event))

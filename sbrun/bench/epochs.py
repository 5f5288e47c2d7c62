"""The timed variants: Traditional, SB (beta = 1, 2, 3) and Stale-SB (n = 2, 3), each training
whole epochs with sbrun's own loop on data loaded once and shared.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from .. import loop
from ..build import Parts, build
from ..config import Config
from ..hooks import Hooks
from ..state import EpochState, RunState
from .probe import sync

# (name, overrides, epochs per timed sample: Stale-SB's is one full fresh/stale cycle)
VARIANTS = [("traditional", ["sampler=traditional"], 1),
            ("sb beta=1", ["sampler=sb", "beta=1"], 1),
            ("sb beta=2", ["sampler=sb", "beta=2"], 1),
            ("sb beta=3", ["sampler=sb", "beta=3"], 1),
            ("stale_sb n=2", ["sampler=stale_sb", "beta=2", "sampler.staleness=2"], 2),
            ("stale_sb n=3", ["sampler=stale_sb", "beta=2", "sampler.staleness=3"], 3)]
NO_HOOKS = Hooks()


def timed_epoch(p: Parts, run: RunState, epoch: int) -> Tuple[float, Dict[str, float], EpochState]:
    """Train epoch `epoch` with sbrun's loop (no evaluation, no outputs). Returns its host
    wall-clock seconds (the device synchronised at both ends), the loop's phase seconds and the
    epoch's state."""
    ep = EpochState.new(epoch, p.local_batch, p.dist.rank, p.device)
    run.epoch = epoch
    sync(p.device)
    t = time.perf_counter()
    loop.run_epoch(p, run, ep, NO_HOOKS)
    phases = p.timer.end_epoch()        # synchronises on CUDA
    wall = time.perf_counter() - t
    p.sampler.end_epoch(epoch)
    run.epoch = epoch + 1
    return wall, phases, ep


@dataclass
class Variant:
    name: str
    parts: Parts
    run: RunState
    cycle: int                      # epochs per timed sample
    next_epoch: int = 0
    samples: List[dict] = field(default_factory=list)

    def train(self) -> dict:
        """One timed sample: `cycle` epochs, averaged."""
        wall = book = 0.0
        backprops = chunks = loaded = scored = 0
        for _ in range(self.cycle):
            seconds, phases, ep = timed_epoch(self.parts, self.run, self.next_epoch)
            self.next_epoch += 1
            wall += seconds
            book += phases["bookkeeping"]
            backprops += ep.global_backprops
            chunks += ep.n_chunks
            loaded += ep.loaded
            scored += ep.select_forwards
        per_example = self.parts.n * self.cycle
        sample = {"epoch_s": wall / self.cycle, "bookkeeping_s": book / self.cycle,
                  "frac": backprops / per_example, "chunks": chunks / self.cycle,
                  "loaded_frac": loaded / per_example, "scored_frac": scored / per_example}
        self.samples.append(sample)
        return sample


def build_variants(configs: Dict[str, Config], device: torch.device, tmp: Path) -> Dict[str, Variant]:
    variants, data = {}, None
    for name, _, cycle in VARIANTS:
        p = build(configs[name], tmp / name.replace(" ", "_"), device, data=data)
        data = p.data            # every variant trains on the same loaded data
        variants[name] = Variant(name, p, RunState.new(p.n, device, p.cfg.optim.lr), cycle)
    return variants


def warm_up(variants: Dict[str, Variant]) -> None:
    """Compiled graphs (compile=true) and one untimed priming epoch per variant."""
    from ..fit import warmup_compile

    for v in variants.values():
        warmup_compile(v.parts, v.run)        # a no-op without compile=true
        timed_epoch(v.parts, v.run, v.next_epoch)
        v.next_epoch += 1

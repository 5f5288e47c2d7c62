"""Per-phase epoch timing.

On CUDA each phase is bracketed by CUDA events and the elapsed times are read once at the end of
the epoch, so timing adds no host syncs to the hot path. On CPU, work is synchronous and
perf_counter brackets are exact. "other" is the epoch's time outside every named phase.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict

import torch

PHASES = ("data", "select_fwd", "bookkeeping", "train_fwd", "backward")


class PhaseTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._events = defaultdict(list)
        self._totals: Dict[str, float] = defaultdict(float)
        self._start = None
        self._t0 = None

    def _event(self):
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def start_epoch(self) -> None:
        self._events.clear()
        self._totals.clear()
        self._t0 = time.perf_counter()
        self._start = self._event() if self.cuda else None

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            start = self._event()
            yield
            self._events[name].append((start, self._event()))
        else:
            t = time.perf_counter()
            yield
            self._totals[name] += time.perf_counter() - t

    def elapsed(self) -> float:
        """Host seconds since the epoch started, 0 between epochs (approximate on CUDA; for
        budget checks)."""
        return 0.0 if self._t0 is None else time.perf_counter() - self._t0

    def end_epoch(self) -> Dict[str, float]:
        """Seconds per phase plus 'other' and 'total' for the epoch (one sync on CUDA)."""
        if self.cuda:
            end = self._event()
            end.synchronize()
            total = self._start.elapsed_time(end) / 1e3
            for name, pairs in self._events.items():
                self._totals[name] = sum(s.elapsed_time(e) for s, e in pairs) / 1e3
        else:
            total = time.perf_counter() - self._t0
        self._t0 = None
        out = {p: float(self._totals.get(p, 0.0)) for p in PHASES}
        # phases only some runs have (the proxy scorer's), present only where they ran
        out.update({p: float(v) for p, v in self._totals.items() if p not in out})
        out["other"] = max(0.0, total - sum(out.values()))
        out["total"] = total
        return out

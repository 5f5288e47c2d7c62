"""The backprop queue: selected examples wait here until a full batch can be stepped on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass
class Step:
    idx: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    w: Optional[torch.Tensor]
    total: int          # examples in this step across all ranks (the mean's denominator)


def _cat(parts: List[Optional[torch.Tensor]], like: List[torch.Tensor]) -> Optional[torch.Tensor]:
    if all(p is None for p in parts):
        return None
    filled = [p if p is not None else torch.ones(len(l), device=l.device) for p, l in zip(parts, like)]
    return filled[0] if len(filled) == 1 else torch.cat(filled)


class BackpropQueue:
    """FIFO of (index, input, label, weight) cut into steps of exactly `batch_size` examples.

    Sizes are host integers (known from tensor shapes), so deciding when to step never syncs.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.parts: List[tuple] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor]) -> None:
        if idx.numel():
            self.parts.append((idx, x, y, w))
            self.size += idx.numel()

    def _take(self, n: int) -> Step:
        if len(self.parts) == 1 and self.parts[0][0].numel() == n:
            idx, x, y, w = self.parts.pop()
        else:
            cols = list(zip(*self.parts))
            idx, x, y = (torch.cat(c) for c in cols[:3])
            w = _cat(list(cols[3]), list(cols[0]))
            rest = idx.numel() - n
            self.parts = [(idx[n:], x[n:], y[n:], None if w is None else w[n:])] if rest else []
            idx, x, y, w = idx[:n], x[:n], y[:n], None if w is None else w[:n]
        self.size -= n
        return Step(idx, x, y, w, n)

    def pop(self) -> Optional[Step]:
        """The next full batch, or None while fewer than batch_size examples wait."""
        return self._take(self.batch_size) if self.size >= self.batch_size else None

    def flush(self) -> Optional[Step]:
        """Whatever is left, as one smaller step (end of epoch)."""
        return self._take(self.size) if self.size else None

    def state_dict(self) -> dict:
        step = self._take(self.size) if self.size else None
        if step is not None:
            self.push(step.idx, step.x, step.y, step.w)
        return {"parts": [] if step is None else [(step.idx, step.x, step.y, step.w)]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.parts, self.size = [], 0
        for idx, x, y, w in state["parts"]:
            self.push(idx.to(device), x.to(device), y.to(device), None if w is None else w.to(device))

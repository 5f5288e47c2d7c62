"""The backprop queue: selected examples wait here until a full batch can be stepped on.

With several ranks, every rank keeps its own examples but the same global ledger: a FIFO of
(rank, count) segments built from the gathered per-chunk counts. A step takes the first
`batch_size` examples of that ledger, so the ranks agree on each step's composition (and on its
size, the mean's denominator) while holding unequal shares of it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch


@dataclass
class Step:
    idx: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    w: Optional[torch.Tensor]
    total: int          # examples in this step across all ranks (the mean's denominator)


class BackpropQueue:
    """FIFO of (index, input, label, weight). Sizes are host integers (known from tensor shapes
    and gathered counts), so deciding when to step never syncs."""

    def __init__(self, batch_size: int, rank: int = 0):
        self.batch_size = batch_size
        self.rank = rank
        self.parts: List[tuple] = []
        self.local = 0
        self.ledger: deque = deque()     # [rank, count] segments, oldest first
        self.size = 0                    # examples waiting on all ranks

    def __len__(self) -> int:
        return self.size

    def push(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor],
             counts: Optional[Sequence[int]] = None) -> None:
        """Queue this rank's chosen examples; `counts` are every rank's kept counts for the chunk
        (default: this rank alone)."""
        if idx.numel():
            self.parts.append((idx, x, y, w))
            self.local += idx.numel()
        for r, n in enumerate(counts if counts is not None else [idx.numel()]):
            if n:
                self.ledger.append([r, int(n)])
                self.size += int(n)

    def _plan(self, total: int) -> int:
        """Take `total` examples off the ledger; return how many are this rank's."""
        mine, need = 0, total
        while need:
            seg = self.ledger[0]
            take = min(need, seg[1])
            mine += take if seg[0] == self.rank else 0
            seg[1] -= take
            need -= take
            if seg[1] == 0:
                self.ledger.popleft()
        self.size -= total
        return mine

    def _take_local(self, n: int) -> Optional[tuple]:
        if n == 0:
            return None
        if len(self.parts) == 1 and self.parts[0][0].numel() == n:
            part = self.parts.pop()
        else:
            cols = list(zip(*self.parts))
            idx, x, y = (torch.cat(c) for c in cols[:3])
            ws = [w if w is not None else torch.ones(len(i), device=i.device) for w, i in zip(cols[3], cols[0])]
            w = None if all(v is None for v in cols[3]) else torch.cat(ws)
            rest = idx[n:], x[n:], y[n:], None if w is None else w[n:]
            self.parts = [rest] if rest[0].numel() else []
            part = (idx[:n], x[:n], y[:n], None if w is None else w[:n])
        self.local -= n
        return part

    def _take(self, total: int) -> Step:
        mine = self._plan(total)
        part = self._take_local(mine)
        if part is None:
            return Step(torch.empty(0, dtype=torch.long), torch.empty(0), torch.empty(0, dtype=torch.long),
                        None, total)
        return Step(*part, total)

    def pop(self) -> Optional[Step]:
        """The next full global batch, or None while fewer than batch_size examples wait."""
        return self._take(self.batch_size) if self.size >= self.batch_size else None

    def flush(self) -> Optional[Step]:
        """Whatever is left, as one smaller step (end of epoch)."""
        return self._take(self.size) if self.size else None

    def state_dict(self) -> dict:
        part = self._take_local(self.local) if self.local else None
        if part is not None:
            self.parts = [part]
            self.local = part[0].numel()
        return {"parts": [] if part is None else [part], "ledger": [list(s) for s in self.ledger]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.parts, self.local = [], 0
        for idx, x, y, w in state["parts"]:
            self.parts.append((idx.to(device), x.to(device), y.to(device), None if w is None else w.to(device)))
            self.local += idx.numel()
        self.ledger = deque([list(s) for s in state.get("ledger", [])])
        self.size = sum(s[1] for s in self.ledger)

"""Example selection for any training loop: the public, stateful wrappers around the pure rules.

The runner's samplers use these same objects, so a user's own loop gets exactly the rule and the
loss window that `sbrun sampler=sb` runs. Usage (losses are per-example, `reduction="none"`)::

    sel = sbrun.SelectiveBackprop(beta=2.0)          # or sbrun.TopK(0.33), sbrun.RandomKeep(0.33)
    batcher = sbrun.KeptBatches(batch_size=128)
    keep = sel.select(losses)                        # bool mask, one entry per loss
    batcher.add(x[keep], y[keep])
    for xb, yb in batcher.full(): train_step(xb, yb)  # the rest waits, across epoch ends too

Selection itself never synchronises with the host (sizes come from tensor shapes); indexing
`x[keep]` does, as any variable-size selection must.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch

from .queue import BackpropQueue, Step
from .samplers import rules


class LossHistory:
    """Ring buffer of the most recent `size` losses, kept on the device.

    Appending is one scatter; the fill level is tracked on the host (it depends only on how many
    losses were appended, never on their values), so reading the window needs no sync.
    """

    def __init__(self, size: int, device: torch.device):
        self.size = size
        self.buf = torch.zeros(size, device=device)
        self.ptr = 0
        self.filled = 0
        self._ar = torch.arange(size, device=device)

    def append(self, losses: torch.Tensor) -> None:
        losses = losses.detach().float().reshape(-1)
        n = losses.numel()
        if n >= self.size:
            self.buf.copy_(losses[n - self.size:])
            self.ptr, self.filled = 0, self.size
            return
        pos = (self._ar[:n] + self.ptr) % self.size
        self.buf[pos] = losses
        self.ptr = (self.ptr + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def window(self) -> torch.Tensor:
        return self.buf[: self.filled]

    def to(self, device: torch.device) -> "LossHistory":
        """Move the window (a one-off copy, e.g. after loading a checkpoint on the CPU)."""
        self.buf, self._ar = self.buf.to(device), self._ar.to(device)
        return self

    def state_dict(self) -> dict:
        return {"buf": self.buf.clone(), "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if state["buf"].numel() != self.size:
            raise ValueError(f"loss window: the state holds {state['buf'].numel()} losses but this "
                             f"window holds history={self.size}; allowed: a state saved with the same history")
        self.buf.copy_(state["buf"].to(self.buf.device))
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])


def _check(ok: bool, owner: str, key: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{owner}: {key}={value!r} is invalid; allowed: {allowed}")


def _flat(losses: torch.Tensor) -> torch.Tensor:
    return losses.detach().reshape(-1)


class Selector:
    """What every in-loop selector shares: `select(losses) -> bool mask`, an optional generator
    for its random draws, and `state_dict()` / `load_state_dict()` (the generator's state
    included, so a resumed loop draws what an uninterrupted one would)."""

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def select(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


class SelectiveBackprop(Selector):
    """Selective-Backprop's rule (Jiang et al. 2019), exactly as `sbrun sampler=sb` applies it.

    For each batch: append the observed losses to the window of the last `history` losses FIRST,
    then P = max(min_prob, percentile ** beta), where percentile is the fraction of the window
    strictly below the loss, and keep an example if U(0, 1) < P. On stationary losses about
    1/(1+beta) of the examples are kept.

        sel = sbrun.SelectiveBackprop(beta=2.0)
        with torch.no_grad():
            losses = F.cross_entropy(model(x), y, reduction="none")
        keep = sel.select(losses)                    # then train on x[keep], y[keep]

    `observed` (default: `losses`) is what enters the window. Under DDP pass every rank's gathered
    losses, so that all ranks share one global window, while the mask stays for this rank's own
    `losses`. The window lives on the losses' device; `generator`, if given, must be on it too.
    """

    def __init__(self, beta: float = 2.0, history: int = 1024, min_prob: float = 0.0,
                 generator: Optional[torch.Generator] = None, device=None):
        _check(beta > 0, "SelectiveBackprop", "beta", beta, "a number > 0")
        _check(isinstance(history, int) and history >= 1, "SelectiveBackprop", "history", history,
               "an integer >= 1")
        _check(0.0 <= min_prob <= 1.0, "SelectiveBackprop", "min_prob", min_prob, "a number in [0, 1]")
        super().__init__(generator)
        self.beta, self.min_prob = float(beta), float(min_prob)
        self.history = LossHistory(history, torch.device(device) if device is not None else "cpu")

    def probabilities(self, losses: torch.Tensor,
                      observed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Append `observed` (default `losses`) to the window and return each loss's P.
        For loops that draw themselves; `select` is this plus the draw."""
        losses = _flat(losses)
        observed = losses if observed is None else _flat(observed)
        if self.history.buf.device != observed.device:
            self.history.to(observed.device)
        self.history.append(observed)
        if losses.numel() and not self.history.filled:
            raise ValueError("SelectiveBackprop: the loss window is empty; allowed: observed= with at "
                             "least one loss (or leave it out to use the batch's own losses)")
        return rules.sb_probabilities(losses, self.history.window(), self.beta, self.min_prob)

    def select(self, losses: torch.Tensor, observed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Bool mask over the flattened `losses`: which examples to backpropagate."""
        return rules.bernoulli_keep(self.probabilities(losses, observed), self.generator)

    def window(self) -> torch.Tensor:
        """The losses the next percentiles are measured against (oldest first until it fills)."""
        return self.history.window()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": self.history.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history.load_state_dict(state["history"])


class TopK(Selector):
    """Keep the int(keep * N) highest losses of each batch (at least one), deterministically:
    online batch selection, and RHO-Loss's loss-only baseline.

        keep = sbrun.TopK(keep=0.33).select(losses)
    """

    def __init__(self, keep: float = 0.33):
        _check(0.0 < keep <= 1.0, "TopK", "keep", keep, "a number in (0, 1]")
        super().__init__()
        self.keep = float(keep)

    def select(self, losses: torch.Tensor) -> torch.Tensor:
        losses = _flat(losses)
        mask = torch.zeros(losses.numel(), dtype=torch.bool, device=losses.device)
        mask[rules.topk_positions(losses, rules.kept_count(losses.numel(), self.keep))] = True
        return mask


class RandomKeep(Selector):
    """Keep each example with probability `prob`, ignoring the losses: the control that tells
    "which examples" apart from "how many" (use prob = 1/(1+beta) to match SB's count).

        keep = sbrun.RandomKeep(prob=0.33).select(losses)   # losses give only N and the device
    """

    def __init__(self, prob: float = 0.33, generator: Optional[torch.Generator] = None):
        _check(0.0 < prob <= 1.0, "RandomKeep", "prob", prob, "a number in (0, 1]")
        super().__init__(generator)
        self.prob = float(prob)

    def select(self, losses: torch.Tensor) -> torch.Tensor:
        losses = _flat(losses)
        probs = torch.full((losses.numel(),), self.prob, device=losses.device)
        return rules.bernoulli_keep(probs, self.generator)


class KeptBatches:
    """Gathers kept examples into full batches of `batch_size` (on sbrun's backprop queue).

        batcher = sbrun.KeptBatches(batch_size=128)
        batcher.add(x[keep], y[keep])               # any number of examples, order kept
        for xb, yb in batcher.full():               # only full batches; the rest waits
            train_step(xb, yb)
        rest = batcher.flush()                      # what waits as one smaller batch, or None; the
                                                    # runner never steps on it (a tiny full-lr step
                                                    # on high-loss examples can undo an epoch)

    With `add(x, y, index=idx)` every batch is `(x, y, index)` instead, so a loop can count how
    often each example was trained on. Either give an index on every add or on none.
    """

    def __init__(self, batch_size: int):
        _check(isinstance(batch_size, int) and batch_size >= 1, "KeptBatches", "batch_size",
               batch_size, "an integer >= 1")
        self.queue = BackpropQueue(batch_size)
        self.indexed: Optional[bool] = None      # fixed by the first add

    def __len__(self) -> int:
        """Examples waiting."""
        return len(self.queue)

    def add(self, x: torch.Tensor, y: torch.Tensor, index: Optional[torch.Tensor] = None) -> None:
        sizes = [len(x), len(y)] + ([] if index is None else [len(index)])
        _check(len(set(sizes)) == 1, "KeptBatches.add", "lengths", sizes, "x, y (and index) of equal length")
        indexed = index is not None
        _check(self.indexed in (None, indexed), "KeptBatches.add", "index", "given" if indexed else None,
               "an index on every add or on none")
        self.indexed = indexed
        # The queue tracks examples by index; without one a placeholder keeps the columns aligned.
        idx = index if indexed else torch.zeros(len(x), dtype=torch.long, device=x.device)
        self.queue.push(idx, x, y, None)

    def _batch(self, step: Optional[Step]) -> Optional[Tuple[torch.Tensor, ...]]:
        if step is None:
            return None
        return (step.x, step.y, step.idx) if self.indexed else (step.x, step.y)

    def full(self) -> Iterator[Tuple[torch.Tensor, ...]]:
        """Every full batch now waiting, oldest examples first."""
        while (batch := self._batch(self.queue.pop())) is not None:
            yield batch

    def flush(self) -> Optional[Tuple[torch.Tensor, ...]]:
        """Whatever is left as one smaller batch, or None when nothing waits."""
        return self._batch(self.queue.flush())

    def state_dict(self) -> dict:
        return {"queue": self.queue.state_dict(), "indexed": self.indexed}

    def load_state_dict(self, state: dict, device=None) -> None:
        """`device`: where the waiting examples go (default: where they were saved)."""
        parts = state["queue"]["parts"]
        where = device if device is not None else (parts[0][1].device if parts else "cpu")
        self.queue.load_state_dict(state["queue"], torch.device(where))
        self.indexed = state["indexed"]

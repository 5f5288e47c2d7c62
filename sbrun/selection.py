"""Example selection for any training loop: the public, stateful wrappers around the pure rules.

The runner's samplers use these same objects, so a user's own loop gets exactly the rule and the
loss window that `sbrun sampler=sb` runs.
"""
from __future__ import annotations

import torch


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

    def state_dict(self) -> dict:
        return {"buf": self.buf.clone(), "ptr": self.ptr, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        self.buf.copy_(state["buf"].to(self.buf.device))
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])

"""Batch augmentations on whole tensors (device-resident, airbench style).

Each takes a batch [B, C, H, W] and an explicit generator on the batch's device and returns a
new batch of the same shape and dtype. No per-example Python work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to H x W at a random offset per example
    (torchvision's RandomCrop(size, padding))."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]   # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]   # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put their broadcast shape first: [B, H, W, C].
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each example horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per example, centred uniformly in the image and clipped at
    the border (DeVries & Taylor 2017; applied after normalisation, as in the SB authors' code)."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=x.device)
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    top, left = cy - size // 2, cx - size // 2
    in_rows = (r[None] >= top[:, None]) & (r[None] < (top + size)[:, None])     # [B, H]
    in_cols = (c[None] >= left[:, None]) & (c[None] < (left + size)[:, None])   # [B, W]
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]                 # [B, 1, H, W]
    return x.masked_fill(hole, 0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] -> (x - mean) / std, with mean/std shaped [1, C, 1, 1]."""
    return (x.float().div_(255.0) - mean) / std

"""The scoring forward's input at a fraction of its resolution (scoring.scale): the loop scores
with it, and build checks at start-up that the model takes the smaller images."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def downsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The scoring input at `scale` of its resolution (Composer's scale_factor, for any sampler)."""
    if scale >= 1.0 or x.dim() != 4:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)

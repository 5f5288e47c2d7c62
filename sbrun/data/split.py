"""The validation split (`dataset.val_fraction`): a fixed part of the training set held out.

The permutation is seeded by `dataset.val_seed` alone, not by the run's seed, so every method and
every seed of a comparison holds out the same examples. build.load_data takes the split after the
subset and before label noise, so validation labels are clean: validation error then measures
generalisation, like a clean dev set, and learning rates can be tuned on it without the test set.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..seeding import generator
from .sets import DataError, ImageSet


def split_indices(n: int, fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices), each sorted: round(fraction * n) examples drawn by
    `seed` are held out. One line naming the key when the split would leave either side empty."""
    size = int(round(fraction * n))
    if fraction > 0 and not 0 < size < n:
        raise DataError(f"dataset.val_fraction={fraction:g} holds out {size} of {n} training examples; allowed: "
                        f"0 (no split), or a fraction that keeps at least one example on each side")
    order = torch.randperm(n, generator=generator("cpu", "val_split", seed))
    return order[size:].sort().values, order[:size].sort().values


def hold_out(train: ImageSet, fraction: float, seed: int) -> Tuple[ImageSet, Optional[ImageSet]]:
    """(the training set that remains, the validation set or None when fraction is 0)."""
    if fraction == 0:
        return train, None
    keep, val = split_indices(len(train), fraction, seed)
    return train.take(keep), train.take(val)

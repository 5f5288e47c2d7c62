"""Label noise (exactly round(r*N) training labels corrupted, chosen by seed) and fixed subsets."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..seeding import derive_seed
from .sets import ImageSet


def corrupt_labels(labels: torch.Tensor, num_classes: int, rate: float, seed: int,
                   mode: str = "uniform") -> Tuple[torch.Tensor, torch.Tensor]:
    """Return (noisy labels, mask of changed labels) for a training set.

    Exactly round(rate * N) examples are chosen by seed. "uniform" gives each a new label drawn
    uniformly from the other classes (never its true class). "permute" (the SB authors' variant)
    shuffles the chosen examples' labels among themselves, which keeps the class balance; an
    example that draws its own class back is not counted as noisy.
    """
    n = labels.numel()
    k = int(round(rate * n))
    g = torch.Generator().manual_seed(derive_seed(seed, "label_noise"))
    chosen = torch.randperm(n, generator=g)[:k]
    old = labels[chosen]
    if mode == "uniform":
        new = (old + torch.randint(1, num_classes, (k,), generator=g)) % num_classes
    elif mode == "permute":
        new = old[torch.randperm(k, generator=g)]
    else:
        raise ValueError(f"unknown noise mode {mode!r}")
    noisy_labels = labels.clone()
    noisy_labels[chosen] = new
    return noisy_labels, noisy_labels != labels


def subset(s: ImageSet, n: Optional[int]) -> ImageSet:
    """The first n examples after a fixed-seed shuffle (all of them when n is null)."""
    if n is None or n >= len(s):
        return s
    # A fixed seed, not the run seed: every run of a comparison trains on the same subset.
    order = torch.randperm(len(s), generator=torch.Generator().manual_seed(0))[:n]
    return s.take(order.sort().values)

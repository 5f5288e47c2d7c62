"""What every dataset becomes: uint8 image tensors and int64 labels, for train and test.

Loaders (built-in, arrays, image folders, a user's `_target_`) return a `TrainTest`; the stream,
the label noise and the figures only ever see that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch


class DataError(RuntimeError):
    """A dataset that cannot be loaded. The message is one line meant for the user."""


@dataclass
class ImageSet:
    images: torch.Tensor   # uint8 [N, C, H, W], or storage.LazyImages (read on demand from disk)
    labels: torch.Tensor   # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, idx: torch.Tensor) -> "ImageSet":
        from .storage import take  # a view of lazy images: nothing is read
        return ImageSet(take(self.images, idx), self.labels[idx])


@dataclass
class TrainTest:
    train: ImageSet
    test: ImageSet
    classes: List[str]

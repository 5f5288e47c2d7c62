"""Datasets, label noise, batching and augmentation."""
from .noise import corrupt_labels
from .sets import DataError, ImageSet, TrainTest

__all__ = ["DataError", "ImageSet", "TrainTest", "corrupt_labels"]

"""Datasets, label noise, batching and augmentation."""
from .sets import DataError, ImageSet, TrainTest
from .noise import corrupt_labels

__all__ = ["DataError", "ImageSet", "TrainTest", "corrupt_labels"]

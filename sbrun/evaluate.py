"""Test- and validation-set evaluation, and batch-norm recalibration before it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import ImageSet
from .data.storage import LazyImages
from .seeding import generator

if TYPE_CHECKING:
    from .build import Parts


def scores(p: Parts) -> Dict[str, float]:
    """test_loss, test_acc, test_error, and val_* likewise when the run holds out a validation
    split (absent without one)."""
    out = {}
    for name, s in (("test", p.test_set), ("val", p.val_set)):
        if s is not None:
            loss, acc = evaluate(p, s)
            out.update({f"{name}_loss": loss, f"{name}_acc": acc, f"{name}_error": 1.0 - acc})
    return out


def evaluate(p: Parts, s: Optional[ImageSet] = None) -> Tuple[float, float]:
    """(mean loss, accuracy) of the bare model in eval mode on `s` (the test set by default),
    sharded across ranks."""
    model = p.model
    model.eval()
    sums = torch.zeros(3, device=p.device)     # loss, correct, count
    part = p.dist.shard_set(p.test_set if s is None else s)
    with torch.inference_mode():
        for x, y in batches(part, p, p.cfg.eval_batch_size):
            with p.autocast:
                out = model(x)
            sums += torch.stack([F.cross_entropy(out.float(), y, reduction="sum"),
                                 (out.argmax(1) == y).sum().float(), torch.tensor(float(y.numel()), device=p.device)])
    loss_sum, correct, count = p.dist.all_sum(sums).tolist()
    return loss_sum / count, correct / count


def batches(s: ImageSet, p: Parts, size: int):
    """Normalised, unaugmented batches of an ImageSet, on the run's device and memory format.
    Images on disk are read by `num_workers` DataLoader workers, a batch at a time."""
    if isinstance(s.images, LazyImages):
        reads = DataLoader(range(len(s)), batch_size=size, num_workers=p.cfg.num_workers,
                           collate_fn=ReadRows(s), pin_memory=p.device.type == "cuda")
    else:
        reads = ((s.images[i:i + size], s.labels[i:i + size]) for i in range(0, len(s), size))
    for x, y in reads:
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        yield p.test_aug.test(x).contiguous(memory_format=p.memory_format), y


class ReadRows:
    """A DataLoader collate_fn: the uint8 images and labels of a batch of row numbers of `s`."""

    def __init__(self, s: ImageSet):
        self.s = s

    def __call__(self, rows):
        idx = torch.as_tensor(rows, dtype=torch.long)
        return self.s.images[idx], self.s.labels[idx]


def recalibrate_bn(p: Parts, epoch: int) -> None:
    """Re-estimate batch-norm running statistics on `bn_recalibrate` uniformly drawn training
    examples (unaugmented, like the test inputs), without touching any weight.

    The running statistics are reset and re-accumulated as a plain average (momentum None) over
    train-mode forwards of the sample; other layers stay in eval mode (no dropout). The draw is
    seeded by (seed, epoch) and taken from the whole training set, so every rank computes the
    same statistics and a resumed run recomputes them exactly.
    """
    n = min(p.cfg.bn_recalibrate, p.n)
    norms = [m for m in p.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if n == 0 or not norms:
        return
    pick = torch.randperm(p.n, generator=generator("cpu", p.cfg.seed, "bn_recalibrate", epoch))[:n]
    sample = p.data.train.take(pick)
    p.model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for x, _ in batches(sample, p, p.cfg.eval_batch_size):
            with p.autocast:
                p.model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    p.model.eval()

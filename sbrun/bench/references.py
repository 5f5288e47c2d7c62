"""The reference loops, and the price of sbrun's per-chunk host sync. The plain loop is what a
hand-written PyTorch epoch on the same device-resident data costs (sbrun's own overhead), the
DataLoader loop what the usual per-example pipeline costs (what the data path buys).
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Dict, List, Optional

import torch

from ..build import Parts, build_model, build_optimizer
from ..data import augment
from ..data.stream import Augmenter
from .epochs import Variant, timed_epoch
from .probe import sgd_step, sync


class PlainLoop:
    """A hand-written epoch over the same device-resident uint8 data and batch augmentation."""

    def __init__(self, p: Parts):
        self.device, self.batch = p.device, p.local_batch
        self.images = p.data.train.images.to(p.device)      # either data path: the CPU copy in p.data
        self.labels = p.data.train.labels.to(p.device)
        self.memory_format, self.autocast = p.memory_format, p.autocast
        self.model = build_model(p.cfg, p.data.spec).to(p.device, memory_format=p.memory_format)
        self.opt = build_optimizer(self.model, p.cfg.optim)
        self.aug = Augmenter(p.data.spec, p.device)
        self.gen = torch.Generator(device=p.device).manual_seed(0)
        self.steps = 0          # steps of the last epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.model(x.contiguous(memory_format=self.memory_format))

    def batches(self):
        perm = torch.randperm(self.labels.numel(), generator=self.gen, device=self.device)
        for idx in perm.split(self.batch):
            yield self.aug.train(self.images[idx], self.gen), self.labels[idx]

    def epoch(self, sync_every_step: bool = False) -> float:
        """Seconds for one epoch; `sync_every_step` drains the device queue after each step (a
        host sync like sbrun's per-chunk one) to price such a sync."""
        self.model.train()
        self.steps = 0
        sync(self.device)
        t = time.perf_counter()
        for x, y in self.batches():
            sgd_step(self.forward, self.opt, x, y)
            self.steps += 1
            if sync_every_step:
                sync(self.device)
        sync(self.device)
        return time.perf_counter() - t


class LoaderLoop(PlainLoop):
    """The same training loop fed by a torchvision DataLoader with per-example transforms."""

    def __init__(self, p: Parts, workers: int):
        super().__init__(p)
        from torch.utils.data import DataLoader, TensorDataset
        from torchvision.transforms import v2

        ds = p.data.spec
        steps = [v2.RandomCrop(ds.image_size, padding=ds.crop_padding)] if ds.crop_padding else []
        steps += [v2.RandomHorizontalFlip()] if ds.flip else []
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(ds.mean, ds.std)]
        data = TensorDataset(p.data.train.images, p.data.train.labels)
        self.loader = DataLoader(_Transformed(data, v2.Compose(steps), ds.cutout), batch_size=self.batch,
                                 shuffle=True, num_workers=workers, pin_memory=p.device.type == "cuda",
                                 persistent_workers=workers > 0, drop_last=False)

    def batches(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, data, transform, cutout: int):
        self.data, self.transform, self.cutout = data, transform, cutout

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        x = self.transform(x)
        if self.cutout:
            x = augment.cutout(x[None], self.cutout, None)[0]
        return x, y


def count_syncs(v: Variant) -> Optional[int]:
    """Host syncs in one (untimed) epoch of `v`, counted by CUDA's sync debug mode; None on CPU,
    where every operation is synchronous and a sync drains nothing."""
    if v.parts.device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            timed_epoch(v.parts, v.run, v.next_epoch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    v.next_epoch += 1
    counted = sum("synchroniz" in str(w.message) for w in caught)
    return counted or None          # none counted: the debug mode did not report (never the loop's truth)


def sync_share(syncs: Optional[int], plain: List[float], plain_synced: List[float], steps: int,
               epoch_s: float) -> Dict[str, float]:
    """The per-chunk sync's estimated share of an epoch: syncs/epoch x the price of one sync,
    priced as the plain loop's extra time per step when it drains the queue after every step."""
    if syncs is None or not plain_synced:
        return {}
    per_sync = max(0.0, statistics.median(plain_synced) - statistics.median(plain)) / max(steps, 1)
    return {"syncs_per_epoch": syncs, "sync_cost_us": per_sync * 1e6, "sync_share": syncs * per_sync / epoch_s}

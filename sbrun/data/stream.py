"""Training batches as (indices, lazily fetched images).

The loop walks an epoch as chunks of example indices. A chunk fetches its augmented images only
when asked, and only for the positions asked: Stale-SB and random selection decide from indices
alone and then load just the chosen examples.

Two paths serve the same interface:
- `TensorStream` (default where the data fits): the uint8 training set lives on the device, the
  order is a device permutation and augmentation runs on whole batches there (airbench style).
- `LoaderStream`: per-example loading and augmentation on the CPU, for data that does not fit in
  device memory and for images on disk (dataset.storage=memmap|files). An epoch starts by loading
  only what each chunk asks for (a thread pool); once a chunk asks for all of its examples, the
  rest of the epoch streams through a DataLoader with worker processes, prefetching whole chunks.
  So an epoch that selects from indices alone (a Stale-SB stale epoch, random selection) reads
  only the examples it trains on, and one that scores everything is not slowed by it.

Every chunk counts the examples it read (`Chunk.loaded`: the metrics' examples_loaded).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import DatasetConfig
from ..seeding import derive_seed, generator
from . import augment
from .sets import ImageSet
from .storage import load_example


class Augmenter:
    """The dataset's training augmentation and normalisation, on batches."""

    def __init__(self, cfg: DatasetConfig, device: torch.device):
        self.cfg = cfg
        self.mean = torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std, device=device).view(1, -1, 1, 1)

    def train(self, x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        x = augment.random_crop(x, self.cfg.crop_padding, gen)
        if self.cfg.flip:
            x = augment.random_flip(x, gen)
        return augment.cutout(self.test(x), self.cfg.cutout, gen)

    def test(self, x: torch.Tensor) -> torch.Tensor:
        return augment.normalize(x, self.mean, self.std)


class Chunk:
    """A chunk's training indices; `images` fetches its augmented inputs when asked, counting the
    examples read in `loaded` (a prefetched chunk was read in full)."""

    def __init__(self, idx: torch.Tensor, fetch, loaded: int = 0):
        self.idx = idx
        self._fetch = fetch
        self.loaded = loaded
        self.asked_all = False

    def __len__(self) -> int:
        return self.idx.numel()

    def images(self, pos: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and training labels of the chunk, or of `pos` within it."""
        self.asked_all = self.asked_all or pos is None
        return self._fetch(pos)


class LazyChunk(Chunk):
    """A chunk that reads from storage only the positions asked for, when asked."""

    def __init__(self, idx: torch.Tensor, load):
        super().__init__(idx, self._load)
        self._reader = load

    def _load(self, pos: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        want = self.idx if pos is None else self.idx[pos]
        self.loaded += want.numel()
        return self._reader(want)


class TensorStream:
    def __init__(self, train: ImageSet, cfg: DatasetConfig, seed: int, device: torch.device,
                 shard: Optional[torch.Tensor] = None, memory_format=torch.contiguous_format):
        self.device = device
        self.images = train.images.to(device)
        self.labels = train.labels.to(device)
        self.shard = (torch.arange(len(train), device=device) if shard is None else shard.to(device))
        self.aug = Augmenter(cfg, device)
        self.seed = seed
        self.memory_format = memory_format
        self._order_gen = self._aug_gen = None

    def __len__(self) -> int:
        return self.shard.numel()

    def start_epoch(self, epoch: int) -> None:
        # the order is drawn on the CPU on every device and path, so a GPU run visits examples in
        # the same order as a CPU run and as the DataLoader path
        self._order_gen = generator("cpu", self.seed, "order", epoch)
        self._aug_gen = generator(self.device, self.seed, "augment", epoch)

    def generator_state(self) -> Optional[torch.Tensor]:
        return self._aug_gen.get_state()

    def set_generator_state(self, state: Optional[torch.Tensor]) -> None:
        if state is not None:
            self._aug_gen.set_state(state)

    def chunks(self, size: int, count: Optional[int] = None, start: int = 0,
               visit: Optional[torch.Tensor] = None) -> Iterator[Chunk]:
        """The epoch's chunks of `size` indices, from chunk `start` on. `visit` (a bool mask over
        the training set) leaves examples out of the epoch; `count` pads with empty chunks
        (multi-rank runs, where every rank must walk the same number of chunks)."""
        order = epoch_order(self.shard, self._order_gen, visit)
        for c in range(start, count if count is not None else math.ceil(len(order) / size)):
            yield LazyChunk(order[c * size:(c + 1) * size], self.fetch)

    def fetch(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.aug.train(self.images[idx], self._aug_gen)
        return x.contiguous(memory_format=self.memory_format), self.labels[idx]


def epoch_order(shard: torch.Tensor, gen: torch.Generator, visit: Optional[torch.Tensor]) -> torch.Tensor:
    """The shard in this epoch's seeded order, without the examples `visit` leaves out (the
    permutation is drawn over the whole shard either way, so pruning never reshuffles the rest)."""
    order = shard[torch.randperm(shard.numel(), generator=gen).to(shard.device)]
    return order if visit is None else order[visit.to(order.device)[order]]


class _Indexed(Dataset):
    """Example i of epoch e, augmented from its own stream seeded by (seed, epoch, i): the same
    pixels whichever worker loads it, however many workers there are, and after a resume."""

    def __init__(self, train: ImageSet, aug: Augmenter, seed: int):
        self.train, self.aug, self.seed = train, aug, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.train)

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "augment", self.epoch, i))
        x = self.aug.train(load_example(self.train.images, i, g)[None], g)[0]
        return i, x, self.train.labels[i]


class LoaderStream:
    def __init__(self, train: ImageSet, cfg: DatasetConfig, seed: int, device: torch.device,
                 shard: Optional[torch.Tensor] = None, memory_format=torch.contiguous_format,
                 num_workers: int = 4):
        self.device = device
        self.dataset = _Indexed(train, Augmenter(cfg, torch.device("cpu")), seed)
        self.shard = torch.arange(len(train)) if shard is None else shard.cpu()
        self.seed = seed
        self.memory_format = memory_format
        self.num_workers = num_workers
        self._pool: Optional[ThreadPoolExecutor] = None

    def __len__(self) -> int:
        return self.shard.numel()

    def start_epoch(self, epoch: int) -> None:
        self.dataset.epoch = epoch

    # Augmentation is seeded per (seed, epoch, example), so there is no generator state to carry.
    def generator_state(self) -> None:
        return None

    def set_generator_state(self, state) -> None:
        pass

    def chunks(self, size: int, count: Optional[int] = None, start: int = 0,
               visit: Optional[torch.Tensor] = None) -> Iterator[Chunk]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.dataset.epoch))
        order = epoch_order(self.shard, g, None if visit is None else visit.cpu())
        total = count if count is not None else math.ceil(len(order) / size)
        # Skipped chunks of a resumed epoch are never loaded: each example's pixels depend only on
        # (seed, epoch, index).
        pieces = list(order[start * size:].split(size))
        done = 0
        while done < len(pieces):           # read what is asked, until a chunk asks for everything
            chunk = LazyChunk(pieces[done].to(self.device), self.fetch)
            done += 1
            yield chunk
            if chunk.asked_all:
                break
        for idx, x, y in self.prefetched(pieces[done:], size):
            yield Chunk(idx, lambda pos, x=x, y=y: (x, y) if pos is None else (x[pos], y[pos]), loaded=len(idx))
        for _ in range(total - start - len(pieces)):      # multi-rank padding: empty chunks
            yield LazyChunk(torch.empty(0, dtype=torch.long, device=self.device), self.fetch)

    def prefetched(self, pieces: List[torch.Tensor], size: int) -> Iterator[Tuple[torch.Tensor, ...]]:
        """Whole chunks through a DataLoader's worker processes, on the device."""
        if not pieces:
            return
        loader = DataLoader(self.dataset, batch_size=size, sampler=torch.cat(pieces).tolist(),
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        for idx, x, y in loader:
            yield (idx.to(self.device, non_blocking=True),
                   x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format),
                   y.to(self.device, non_blocking=True))

    def fetch(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and labels of arbitrary training indices (the same pixels as in a
        prefetched chunk), read by a pool of `num_workers` threads (image decoding and the
        tensor kernels release the GIL)."""
        ids = idx.tolist()
        if not ids:
            shape = self.dataset.train.images.shape[1:]
            return (torch.empty(0, *shape, device=self.device), torch.empty(0, dtype=torch.long, device=self.device))
        if self.num_workers > 1 and len(ids) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="sbrun-load")
            items = list(self._pool.map(self.dataset.__getitem__, ids))
        else:
            items = [self.dataset[i] for i in ids]
        x = torch.stack([it[1] for it in items]).to(self.device).contiguous(memory_format=self.memory_format)
        y = torch.stack([torch.as_tensor(it[2]) for it in items]).to(self.device)
        return x, y


def fits_on_device(*sets: ImageSet, device: torch.device, fraction: float = 0.5) -> bool:
    """Whether the uint8 data takes at most `fraction` of the device's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    need = sum(s.images.numel() + s.labels.numel() * 8 for s in sets)
    return need <= fraction * free

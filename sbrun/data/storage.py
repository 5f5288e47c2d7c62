"""Where training images live (`dataset.storage`): in memory, in a memory-mapped file, or as image
files decoded when an example is read.

- `memory`: one uint8 [N, C, H, W] tensor (what every dataset has always been).
- `memmap`: the same array in a .npy file on disk, read through np.memmap: only the rows a batch
  asks for are paged in, so data that fits on disk but not in RAM trains at near-memory speed.
- `files`: each example decoded from its image file when it is read (in the loader's workers), with
  nothing decoded up front and nothing cached in RAM: the standard PyTorch way of training on files.

`LazyImages` (memmap and files) looks like the tensor where the rest of sbrun reads images:
`images[idx]` returns a uint8 tensor of those rows, `.shape` is [N, C, H, W], and `subset` gives a
view (subsets and the validation split take views, never copies). Only the loader path reads them
(build.py forces it), one example at a time through `load`, which is where a random-resized crop of
the full-resolution file happens for ImageNet-style recipes.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

log = logging.getLogger("sbrun")

# `auto` keeps data in memory when its decoded size is at most this share of the machine's RAM.
AUTO_RAM_FRACTION = 0.25


class LazyImages:
    """uint8 images of shape [C, H, W] read on demand; a view of `rows` of the backing store."""

    def __init__(self, example_shape: Tuple[int, int, int], total: int, rows: Optional[torch.Tensor] = None):
        self.example_shape = tuple(example_shape)
        self.rows = torch.arange(total) if rows is None else rows

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.example_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: torch.Tensor) -> "LazyImages":
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.rows = self.rows[torch.as_tensor(idx, dtype=torch.long)]
        return view

    def __getitem__(self, key) -> torch.Tensor:
        rows = self.rows[key] if not isinstance(key, int) else self.rows[key:key + 1]
        return self.read([int(r) for r in rows.reshape(-1)])

    def load(self, i: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
        """Example i as uint8 [C, H, W]; `gen` is its augmentation stream (FileImages crops with it)."""
        return self.read([int(self.rows[i])])[0]

    def read(self, rows: List[int]) -> torch.Tensor:     # uint8 [len(rows), C, H, W]
        raise NotImplementedError


class MemmapImages(LazyImages):
    """A uint8 [N, C, H, W] .npy file, opened read-only in each process that reads it (a worker
    gets the path, not the pages)."""

    def __init__(self, path: Path, rows: Optional[torch.Tensor] = None):
        self.path = Path(path)
        self._array = None
        a = self.array
        super().__init__(a.shape[1:], a.shape[0], rows)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def read(self, rows: List[int]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(rows, dtype=np.int64)]))


class FileImages(LazyImages):
    """Image files decoded by `decode(path, gen)` -> uint8 [C, H, W] when read. `gen` None is the
    deterministic decode (evaluation, figures, scoring of an unaugmented example)."""

    def __init__(self, files: Sequence[Path], example_shape: Tuple[int, int, int],
                 decode: Callable[[Path, Optional[torch.Generator]], np.ndarray], rows: Optional[torch.Tensor] = None):
        self.files = [str(f) for f in files]
        self.decode = decode
        super().__init__(example_shape, len(self.files), rows)

    def load(self, i: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
        return self._tensor(self.files[int(self.rows[i])], gen)

    def read(self, rows: List[int]) -> torch.Tensor:
        if not rows:
            return torch.empty(0, *self.example_shape, dtype=torch.uint8)
        return torch.stack([self._tensor(self.files[r], None) for r in rows])

    def _tensor(self, path: str, gen: Optional[torch.Generator]) -> torch.Tensor:
        a = self.decode(Path(path), gen)
        a = a[:, :, None] if a.ndim == 2 else a
        return torch.tensor(a).permute(2, 0, 1)[:self.example_shape[0]].contiguous()   # a copy: PIL's is read-only


def load_example(images, i: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Training example i as uint8 [C, H, W], from a tensor or from LazyImages."""
    return images.load(i, gen) if isinstance(images, LazyImages) else images[i]


def take(images, idx: torch.Tensor):
    """The rows `idx` of a tensor (a copy) or of LazyImages (a view, nothing read)."""
    return images.subset(idx) if isinstance(images, LazyImages) else images[idx]


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def pick_storage(storage: str, decoded_bytes: int, source: str) -> str:
    """`auto` -> memory when the decoded data takes at most AUTO_RAM_FRACTION of RAM, else memmap;
    the choice is logged with its numbers. Other values pass through."""
    if storage != "auto":
        return storage
    ram = ram_bytes()
    picked = "memory" if ram == 0 or decoded_bytes <= AUTO_RAM_FRACTION * ram else "memmap"
    log.info("dataset.storage=auto picked %s for %s: decoded %.2f GB, %d%% of RAM is %.2f GB", picked, source,
             decoded_bytes / 1e9, int(100 * AUTO_RAM_FRACTION), AUTO_RAM_FRACTION * ram / 1e9)
    return picked

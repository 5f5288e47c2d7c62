"""`dataset=folder`: a user's images in torchvision's ImageFolder layout, decoded once and cached.

    DIR/train/<class>/<image>     classes are the sorted folder names under train/
    DIR/test/<class>/<image>      test/ may lack classes, but may not add any

Images are recognised by extension (IMAGE_EXTENSIONS, any case) and decoded by Pillow; files and
folders whose name starts with "." (.DS_Store, .ipynb_checkpoints) are ignored, any other file is an
error, so that a stray file is not silently left out. Class folders may hold subfolders.

Each image is turned upright (EXIF orientation), center-cropped to the largest square and resized
to image_size x image_size (bilinear, antialiased): the aspect ratio is kept, as with torchvision's
Resize(image_size) followed by CenterCrop(image_size). Channels: 1 if every image is grayscale,
else 3 (RGB; grayscale images are repeated, alpha is dropped), unless `channels` says so.

Storage (`dataset.storage`, sbrun/data/storage.py):
- memory: every image decoded once and cached in DIR/.sbrun-cache/<key>.npz;
- memmap: decoded once, with a progress bar, into DIR/.sbrun-cache/<key>.npy (uint8 [N, C, H, W],
  written straight to disk, never whole in RAM) and read through np.memmap;
- files: each image decoded from its file when an example is read; nothing decoded up front.
The three decode the same pixels, so a run's metrics do not depend on the storage (README).
The key covers image_size, channels, the crop and every file's path, size and modification time,
so a changed folder is decoded again; old entries stay until the user deletes the cache folder.

ImageNet-style recipes (dataset=imagenet) take `test_split=val`, `eval_crop=0.875` (Resize 256,
CenterCrop 224 at image_size 224) and `random_resized_crop=true`: with files storage each training
read is a RandomResizedCrop of the full-resolution file (scale 0.08-1, aspect 3/4-4/3), drawn from
the example's own augmentation stream.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..messages import one_line
from ..records import OutputError, write_npz
from .check import as_train_test
from .sets import DataError, ImageSet, TrainTest
from .storage import FileImages, MemmapImages, pick_storage

log = logging.getLogger("sbrun")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm")
CACHE_DIR = ".sbrun-cache"
# Bump when decoding changes, so that old caches are not reused.
CACHE_VERSION = 1
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUT = "DIR/train/<class>/<image> and DIR/test/<class>/<image>"
# RandomResizedCrop's defaults (torchvision): area fraction and aspect-ratio range, tries before
# falling back to a center crop.
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10

Listing = List[Tuple[Path, int]]   # (image file, class index)


# --- listing -------------------------------------------------------------------------------------

def _visible(entries) -> List[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _class_dirs(split_dir: Path) -> List[str]:
    """Sorted class folder names of a split; a non-hidden file there is an error."""
    with os.scandir(split_dir) as it:
        entries = _visible(it)
    for e in entries:
        if not e.is_dir():
            raise DataError(f"{split_dir / e.name}: a file directly in {split_dir.name}/; "
                            f"{split_dir.name}/ may only hold class folders ({LAYOUT})")
    if not entries:
        raise DataError(f"{split_dir}: no class folders; the layout is {LAYOUT}")
    return [e.name for e in entries]


def _images_in(class_dir: Path) -> List[Path]:
    out: List[Path] = []
    for top, dirs, files in os.walk(class_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            p = Path(top) / name
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{p}: not an image file; accepted extensions are "
                                f"{' '.join(IMAGE_EXTENSIONS)} (files starting with '.' are ignored)")
            out.append(p)
    if not out:
        raise DataError(f"{class_dir}: class folder holds no images; add images or remove the folder")
    return out


def list_folder(root: Path, test_split: str = "test") -> Tuple[List[str], Listing, Listing]:
    """(classes, train files, test files), checked before anything is decoded. `test_split` is the
    evaluation folder's name (ImageNet's is val/)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; dataset.path must be a folder laid out as {LAYOUT}")
    for split in ("train", test_split):
        if not (root / split).is_dir():
            raise DataError(f"{root}: missing the {split}/ split; the layout is {LAYOUT.replace('test', test_split)}")
    classes = _class_dirs(root / "train")
    test_classes = _class_dirs(root / test_split)
    extra = [c for c in test_classes if c not in classes]
    if extra:
        raise DataError(f"{root / test_split}: class folder(s) {', '.join(extra)} not in train/; "
                        f"{test_split}/ may only use train/'s classes ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    splits = []
    for split, names in (("train", classes), (test_split, test_classes)):
        splits.append([(p, index[c]) for c in names for p in _images_in(root / split / c)])
    return classes, splits[0], splits[1]


# --- decoding ------------------------------------------------------------------------------------

def decode_image(path: Path, image_size: int, channels: Optional[int], crop: float = 1.0,
                 gen: Optional[torch.Generator] = None) -> Tuple[np.ndarray, bool]:
    """(uint8 image_size x image_size [x 3] array, whether the file is grayscale). The image is
    RGB unless channels is 1, or channels is unset and the file is grayscale. Without `gen`, the
    center square of side `crop` x the shorter side is resized (crop 0.875: Resize(256) then
    CenterCrop(224)); with `gen`, a RandomResizedCrop drawn from it."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        gray = img.mode in _GRAY_MODES
        if gen is None:     # JPEG: decode big photos at a reduced scale (a random crop may need every pixel)
            img.draft(None, (math.ceil(image_size / crop),) * 2)
        img = ImageOps.exif_transpose(img)
        img = img.convert("L" if channels == 1 or (channels is None and gray) else "RGB")
        box = center_box(*img.size, crop) if gen is None else random_resized_box(*img.size, gen)
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
        return np.asarray(img, dtype=np.uint8), gray


def center_box(w: int, h: int, crop: float) -> Tuple[float, float, float, float]:
    side = min(w, h) * crop
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side


def random_resized_box(w: int, h: int, gen: torch.Generator) -> Tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom), drawn from `gen`: an area fraction in
    RRC_SCALE and a log-uniform aspect ratio in RRC_RATIO, retried RRC_TRIES times, else the
    largest center crop whose aspect ratio lies in RRC_RATIO."""
    area, lo, hi = w * h, math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for _ in range(RRC_TRIES):
        u = torch.rand(3, generator=gen).tolist()
        target = area * (RRC_SCALE[0] + u[0] * (RRC_SCALE[1] - RRC_SCALE[0]))
        aspect = math.exp(lo + u[1] * (hi - lo))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            return left, top, left + cw, top + ch
    ratio = w / h
    cw, ch = (w, round(w / RRC_RATIO[0])) if ratio < RRC_RATIO[0] else \
        ((round(h * RRC_RATIO[1]), h) if ratio > RRC_RATIO[1] else (w, h))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def corrupt(path: Path, err: Exception) -> DataError:
    """A damaged image file as one line naming it (Pillow raises many types for them)."""
    return DataError(f"{path}: unreadable or corrupt image ({one_line(err, lines=None, limit=160)}); "
                     f"replace or remove it")


def decode_checked(path: Path, image_size: int, channels: Optional[int], crop: float = 1.0,
                   gen: Optional[torch.Generator] = None) -> Tuple[np.ndarray, bool]:
    """decode_image, with a damaged file as one DataError line naming it."""
    try:
        return decode_image(path, image_size, channels, crop, gen)
    except Exception as err:
        raise corrupt(path, err) from None


def _decode(root: Path, files: Listing, image_size: int, channels: Optional[int], crop: float,
            progress: Optional[bool], out: Optional[np.ndarray] = None) -> np.ndarray:
    """All files as uint8 [N, C, H, W], written into `out` (a memmap of that shape, channels given)
    or a new array; C is `channels`, or 1 if every file is grayscale, else 3."""
    out = np.empty((len(files), channels or 3, image_size, image_size), dtype=np.uint8) if out is None else out
    all_gray = True
    # progress None: a bar on a terminal, silence in logs and batch jobs (tqdm's disable=None).
    bar = tqdm(files, desc=f"decoding {root.name}", unit="img", leave=False,
               disable=None if progress is None else not progress)
    for i, (path, _) in enumerate(bar):
        a, gray = decode_checked(path, image_size, channels, crop)
        out[i] = (a if a.ndim == 3 else a[:, :, None]).transpose(2, 0, 1)   # a gray image fills every channel
        all_gray = all_gray and gray
    return out[:, :1] if channels is None and all_gray else out


def file_channels(files: Listing, channels: Optional[int]) -> int:
    """`channels`, else 1 when every file is grayscale (read from the headers, nothing decoded)."""
    if channels is not None:
        return channels
    from PIL import Image

    for path, _ in files:
        try:
            with Image.open(path) as img:
                if img.mode not in _GRAY_MODES:
                    return 3
        except Exception as err:
            raise corrupt(path, err) from None
    return 1


def file_decoder(image_size: int, channels: int, crop: float, random_crop: bool, path: Path,
                 gen: Optional[torch.Generator]) -> np.ndarray:
    """FileImages' decode: a random-resized crop when training asks with a generator, else the
    deterministic one (the same pixels as memory and memmap storage)."""
    return decode_checked(path, image_size, channels, crop, gen if random_crop else None)[0]


# --- cache ---------------------------------------------------------------------------------------

def cache_key(root: Path, files: Listing, image_size: int, channels: Optional[int], crop: float = 1.0) -> str:
    crop_key = "" if crop == 1.0 else f" crop={crop:g}"     # the keys of caches written before crop existed
    h = hashlib.sha256(f"v{CACHE_VERSION} size={image_size} channels={channels}{crop_key}\n".encode())
    for path, label in files:
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _read_cache(path: Path, n: int, image_size: int) -> Optional[torch.Tensor]:
    """The cached uint8 [N, C, H, W] images of every listed file (train, then test), or None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
        if images.dtype != np.uint8 or images.shape[:1] + images.shape[2:] != (n, image_size, image_size):
            raise ValueError(f"holds {images.dtype} {images.shape}")
        return torch.from_numpy(images)
    except Exception as err:  # a damaged cache is only a lost speed-up
        log.warning("ignoring the unreadable image cache %s (%s); decoding again", path,
                    one_line(err, lines=None, limit=160))
        return None


def load_folder(path, image_size: int, channels: Optional[int] = None, num_classes: Optional[int] = None, *,
                progress: Optional[bool] = None, storage: str = "memory", test_split: str = "test",
                eval_crop: float = 1.0, random_resized_crop: bool = False) -> TrainTest:
    """The folder at `path` as a checked TrainTest (module docstring: layout, resizing, storage).
    progress: show the decoding bar (None: only on a terminal). Everything the listing can tell
    is checked before anything is decoded or cached, so a refused folder is left untouched."""
    root = Path(path).expanduser()
    if not (isinstance(image_size, int) and image_size >= 1):
        raise DataError(f"{root}: image_size is {image_size!r}; set dataset.image_size to an integer >= 1")
    if channels not in (None, 1, 3):
        raise DataError(f"{root}: channels is {channels!r}; dataset.channels must be 1 (grayscale), "
                        f"3 (RGB) or unset (inferred)")
    if not 0 < eval_crop <= 1:
        raise DataError(f"{root}: eval_crop is {eval_crop!r}; allowed: a fraction in (0, 1] of the shorter side")
    classes, train, test = list_folder(root, test_split)
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: only one class folder ({classes[0]}); classification needs at "
                        f"least 2 ({LAYOUT})")
    if num_classes is not None and num_classes < len(classes):
        raise DataError(f"{root / 'train'}: {len(classes)} class folders, but dataset.num_classes={num_classes}; "
                        f"allowed: null (from the folders) or at least {len(classes)}")
    decoded = (len(train) + len(test)) * (channels or 3) * image_size ** 2
    storage = pick_storage(storage, decoded, str(root))
    if random_resized_crop and storage != "files":
        raise DataError(f"{root}: random_resized_crop needs the full-resolution files, but dataset.storage="
                        f"{storage}; allowed: dataset.storage=files, or random_resized_crop=false")
    key = cache_key(root, train + test, image_size, channels, eval_crop)
    labels = torch.tensor([label for _, label in train + test], dtype=torch.int64)
    n = len(train)
    if storage == "files":
        c = file_channels(train + test, channels)

        def files_set(files: Listing, part: torch.Tensor, random_crop: bool) -> ImageSet:
            decode = functools.partial(file_decoder, image_size, c, eval_crop, random_crop)
            return ImageSet(FileImages([f for f, _ in files], (c, image_size, image_size), decode), part)
        return as_train_test(TrainTest(files_set(train, labels[:n], random_resized_crop),
                                       files_set(test, labels[n:], False), classes), str(root))
    if storage == "memmap":
        images = MemmapImages(_memmap_cache(root, key, train + test, image_size, channels, eval_crop, progress))
        return as_train_test(TrainTest(ImageSet(images.subset(torch.arange(n)), labels[:n]),
                                       ImageSet(images.subset(torch.arange(n, len(labels))), labels[n:]), classes),
                             str(root))
    cache = root / CACHE_DIR / f"{key}.npz"
    images = _read_cache(cache, len(train) + len(test), image_size)
    if images is None:
        images = torch.from_numpy(np.ascontiguousarray(_decode(root, train + test, image_size, channels, eval_crop,
                                                               progress)))
        try:
            write_npz(cache, images=images.numpy())
        except OutputError as err:
            log.warning("image cache not written, the next run decodes again: %s", err)
    return as_train_test(TrainTest(ImageSet(images[:n], labels[:n]), ImageSet(images[n:], labels[n:]), classes),
                         str(root))


def _memmap_cache(root: Path, key: str, files: Listing, image_size: int, channels: Optional[int], crop: float,
                  progress: Optional[bool]) -> Path:
    """DIR/.sbrun-cache/<key>.npy: every image decoded straight into a file-backed array (never
    whole in RAM), written under a temporary name and renamed when complete."""
    path = root / CACHE_DIR / f"{key}.npy"
    if path.is_file():
        return path
    c = file_channels(files, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), c, image_size, image_size))
        _decode(root, files, image_size, c, crop, progress, out=out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

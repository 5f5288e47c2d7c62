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

The decoded tensors are cached in DIR/.sbrun-cache/<key>.npz. The key covers image_size, channels
and every file's path, size and modification time, so a changed folder is decoded again; old
entries stay until the user deletes the cache folder.
"""
from __future__ import annotations

import hashlib
import logging
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

log = logging.getLogger("sbrun")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm")
CACHE_DIR = ".sbrun-cache"
# Bump when decoding changes, so that old caches are not reused.
CACHE_VERSION = 1
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUT = "DIR/train/<class>/<image> and DIR/test/<class>/<image>"

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


def list_folder(root: Path) -> Tuple[List[str], Listing, Listing]:
    """(classes, train files, test files), checked before anything is decoded."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; dataset.path must be a folder laid out as {LAYOUT}")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root}: missing the {split}/ split; the layout is {LAYOUT}")
    classes = _class_dirs(root / "train")
    test_classes = _class_dirs(root / "test")
    extra = [c for c in test_classes if c not in classes]
    if extra:
        raise DataError(f"{root / 'test'}: class folder(s) {', '.join(extra)} not in train/; "
                        f"test/ may only use train/'s classes ({', '.join(classes)})")
    index = {c: i for i, c in enumerate(classes)}
    splits = []
    for split, names in (("train", classes), ("test", test_classes)):
        splits.append([(p, index[c]) for c in names for p in _images_in(root / split / c)])
    return classes, splits[0], splits[1]


# --- decoding ------------------------------------------------------------------------------------

def decode_image(path: Path, image_size: int, channels: Optional[int]) -> Tuple[np.ndarray, bool]:
    """(uint8 image_size x image_size [x 3] array, whether the file is grayscale). The image is
    RGB unless channels is 1, or channels is unset and the file is grayscale."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        gray = img.mode in _GRAY_MODES
        img.draft(None, (image_size, image_size))   # JPEG: decode big photos at a reduced scale
        img = ImageOps.exif_transpose(img)
        img = img.convert("L" if channels == 1 or (channels is None and gray) else "RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR,
                         box=(left, top, left + side, top + side))
        return np.asarray(img, dtype=np.uint8), gray


def _decode(root: Path, files: Listing, image_size: int, channels: Optional[int],
            progress: Optional[bool]) -> torch.Tensor:
    """All files as uint8 [N, C, H, W]; C is `channels`, or 1 if every file is grayscale, else 3."""
    out = np.empty((len(files), image_size, image_size, channels or 3), dtype=np.uint8)
    all_gray = True
    # progress None: a bar on a terminal, silence in logs and batch jobs (tqdm's disable=None).
    bar = tqdm(files, desc=f"decoding {root.name}", unit="img", leave=False,
               disable=None if progress is None else not progress)
    for i, (path, _) in enumerate(bar):
        try:
            a, gray = decode_image(path, image_size, channels)
        except Exception as err:  # Pillow raises many types for damaged files
            raise DataError(f"{path}: unreadable or corrupt image ({one_line(err, lines=None, limit=160)}); "
                            f"replace or remove it") from None
        out[i] = a if a.ndim == 3 else a[:, :, None]   # a gray image fills every channel
        all_gray = all_gray and gray
    if channels is None and all_gray:
        out = out[..., :1]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _split_sets(images: torch.Tensor, train: Listing, test: Listing) -> Tuple[ImageSet, ImageSet]:
    labels = torch.tensor([label for _, label in train + test], dtype=torch.int64)
    n = len(train)
    return ImageSet(images[:n], labels[:n]), ImageSet(images[n:], labels[n:])


# --- cache ---------------------------------------------------------------------------------------

def cache_key(root: Path, files: Listing, image_size: int, channels: Optional[int]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} size={image_size} channels={channels}\n".encode())
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
                progress: Optional[bool] = None) -> TrainTest:
    """The folder at `path` as a checked TrainTest (module docstring: layout, resizing, cache).
    progress: show the decoding bar (None: only on a terminal). Everything the listing can tell
    is checked before anything is decoded or cached, so a refused folder is left untouched."""
    root = Path(path).expanduser()
    if not (isinstance(image_size, int) and image_size >= 1):
        raise DataError(f"{root}: image_size is {image_size!r}; set dataset.image_size to an integer >= 1")
    if channels not in (None, 1, 3):
        raise DataError(f"{root}: channels is {channels!r}; dataset.channels must be 1 (grayscale), "
                        f"3 (RGB) or unset (inferred)")
    classes, train, test = list_folder(root)
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: only one class folder ({classes[0]}); classification needs at "
                        f"least 2 ({LAYOUT})")
    if num_classes is not None and num_classes < len(classes):
        raise DataError(f"{root / 'train'}: {len(classes)} class folders, but dataset.num_classes={num_classes}; "
                        f"allowed: null (from the folders) or at least {len(classes)}")
    cache = root / CACHE_DIR / f"{cache_key(root, train + test, image_size, channels)}.npz"
    images = _read_cache(cache, len(train) + len(test), image_size)
    if images is None:
        images = _decode(root, train + test, image_size, channels, progress)
        try:
            write_npz(cache, images=images.numpy())
        except OutputError as err:
            log.warning("image cache not written, the next run decodes again: %s", err)
    train_set, test_set = _split_sets(images, train, test)
    return as_train_test(TrainTest(train_set, test_set, classes), str(root))

"""Turn what a loader returns into a checked `TrainTest`, and read its shape and statistics.

The arrays and folder loaders and a user's own dataset `_target_` all end here, so every way in
gets the same checks and the same one-line `DataError`s.

Accepted forms (numpy arrays or torch tensors):
- a `TrainTest` (images already uint8 [N, C, H, W]);
- a dict, or an object with attributes, holding x_train, y_train, x_test, y_test (optionally
  `classes`, a list of names);
- a tuple (x_train, y_train, x_test, y_test) or Keras' ((x_train, y_train), (x_test, y_test)).

Image layout. N×H×W is grayscale. Four dimensions are read as N×H×W×C (channels last, C in
1..4), as image files and numpy code usually store them, with one exception: a torch tensor of
shape N×C×H×W with C in 1..4 and H, W > 4 is taken as channels-first, torch's own convention.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from ..messages import one_line
from .sets import DataError, ImageSet, TrainTest
from .storage import LazyImages

KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUT = ("x_train, y_train, x_test, y_test (uint8 images NxHxW or NxHxWxC, C in 1..4; "
          "integer labels >= 0 of length N)")
# Values per chunk when summing for mean/std: 8 MiB of int64 at a time, whatever the data set's size.
STATS_CHUNK = 1 << 20
# Images on disk (dataset.storage=memmap|files) get their mean/std from at most this many examples
# (a fixed-seed draw); a set that small or smaller is read whole, exactly like one in memory.
STATS_SAMPLE = 10_000


# --- unpacking -----------------------------------------------------------------------------------

def _unpack(obj, source: str) -> Tuple[dict, Optional[List[str]], bool]:
    """(arrays by key, class names or None, whether images are known to be [N, C, H, W])."""
    if isinstance(obj, TrainTest):
        parts = dict(zip(KEYS, (obj.train.images, obj.train.labels, obj.test.images, obj.test.labels)))
        return parts, list(obj.classes) or None, True
    if isinstance(obj, (tuple, list)):
        if len(obj) == 2 and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj):
            obj = (*obj[0], *obj[1])
        if len(obj) != 4:
            raise DataError(f"{source}: returned a sequence of {len(obj)} items; return 4 arrays "
                            f"({', '.join(KEYS)}) or a dict with those keys")
        return dict(zip(KEYS, obj)), None, False
    if isinstance(obj, dict):
        get, present = obj.get, list(obj)
    else:  # a user's dataset object exposing the arrays as attributes
        get = lambda k: getattr(obj, k, None)  # noqa: E731
        present = [k for k in (*KEYS, "classes") if hasattr(obj, k)]
        if not present:
            raise DataError(f"{source}: returned a {type(obj).__name__}; return a TrainTest, a dict "
                            f"or an object with {LAYOUT}, or a tuple of those four arrays")
    check_keys([k for k in present if get(k) is not None], source)
    classes = get("classes")
    return {k: get(k) for k in KEYS}, _class_names(classes, source), False


def check_keys(present: List[str], source: str) -> None:
    """One line naming the missing arrays, what was found instead and the expected layout."""
    missing = [k for k in KEYS if k not in present]
    if missing:
        found = ", ".join(str(k) for k in present) or "nothing"
        raise DataError(f"{source}: missing {', '.join(missing)} (found {found}); "
                        f"expected {LAYOUT}, optionally classes")


def _class_names(classes, source: str) -> Optional[List[str]]:
    if classes is None:
        return None
    names = np.asarray(classes)
    if names.ndim != 1 or names.size == 0:
        raise DataError(f"{source}: classes has shape {names.shape}; give a non-empty list of names")
    return [str(c) for c in names.tolist()]


def _array(x, name: str, source: str):
    """A torch tensor (detached, on the CPU) or a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        a = np.asarray(x)
        why = "ragged or mixed objects" if a.dtype == object else None
    except (TypeError, ValueError) as err:
        why = one_line(err, lines=None, limit=160)
    if why:
        raise DataError(f"{source}: {name} is not an array ({why}); give a numpy array or a torch tensor")
    return a


def _dtype_name(a) -> str:
    return str(a.dtype).replace("torch.", "")


def _images(x, name: str, source: str, nchw: bool) -> torch.Tensor:
    if isinstance(x, LazyImages):       # uint8 [N, C, H, W] by construction, read on demand
        return x
    a = _array(x, name, source)
    if _dtype_name(a) != "uint8":
        # Floats in [0, 1] and 0..255 are both common; guessing which one is meant would silently
        # scale the data wrongly, so the user converts explicitly.
        raise DataError(f"{source}: {name} has dtype {_dtype_name(a)}; images must be uint8 0-255 "
                        f"(float images are not converted: use (x * 255).round().astype(np.uint8) "
                        f"for values in [0, 1])")
    shape = tuple(a.shape)
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() == 3:
        return t.unsqueeze(1).contiguous()
    if t.dim() == 4:
        torch_nchw = isinstance(a, torch.Tensor) and 1 <= shape[1] <= 4 and min(shape[2:]) > 4
        if nchw or torch_nchw:
            return t.contiguous()
        if 1 <= shape[3] <= 4:
            return t.permute(0, 3, 1, 2).contiguous()
    hint = ("; it looks channels-first: pass x.transpose(0, 2, 3, 1) or a torch tensor"
            if len(shape) == 4 and 1 <= shape[1] <= 4 else "")
    raise DataError(f"{source}: {name} has shape {shape}; images must be NxHxW or NxHxWxC "
                    f"with C in 1..4{hint}")


def _labels(y, name: str, source: str) -> torch.Tensor:
    a = _array(y, name, source)
    shape = tuple(a.shape)
    if len(shape) == 2 and shape[1] == 1:   # (N, 1) columns, as in .mat files
        a = a.reshape(-1)
    if len(a.shape) != 1:
        raise DataError(f"{source}: {name} has shape {shape}; labels must be one integer per image (N,)")
    if isinstance(a, torch.Tensor):
        integer = not (a.is_floating_point() or a.is_complex() or a.dtype == torch.bool)
    else:
        integer = a.dtype.kind in "iu"
    if not integer:
        raise DataError(f"{source}: {name} has dtype {_dtype_name(a)}; labels must be integers "
                        f"0..K-1 (cast with .astype(np.int64))")
    t = a.to(torch.int64) if isinstance(a, torch.Tensor) else torch.from_numpy(a.astype(np.int64))
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{source}: {name} has a negative label ({int(t.min())}); "
                        f"labels must be integers 0..K-1")
    return t


# --- checks --------------------------------------------------------------------------------------

def _split(x, y, split: str, source: str, nchw: bool) -> ImageSet:
    images = _images(x, f"x_{split}", source, nchw)
    labels = _labels(y, f"y_{split}", source)
    if len(images) != len(labels):
        raise DataError(f"{source}: x_{split} has {len(images)} images but y_{split} has "
                        f"{len(labels)} labels; each image needs exactly one label")
    if len(images) == 0:
        raise DataError(f"{source}: the {split} split is empty; train and test each need "
                        f"at least one image")
    return ImageSet(images, labels)


def max_label(data: TrainTest) -> int:
    return max(int(data.train.labels.max()), int(data.test.labels.max()))


def check_label_range(data: TrainTest, num_classes: int, source: str, why: str) -> None:
    """Every label of both splits in [0, num_classes); `why` says where num_classes came from."""
    top = max_label(data)
    if top >= num_classes:
        raise DataError(f"{source}: labels go up to {top} but {why}; labels must lie in "
                        f"0..{num_classes - 1}")


def as_train_test(obj, source: str, num_classes: Optional[int] = None) -> TrainTest:
    """Coerce and check what a loader returned (see the module docstring for the accepted forms).

    Labels must lie below `num_classes` when given, else below the number of `classes` names when
    given; otherwise the class count is inferred later (describe). Raises DataError (one line)."""
    parts, classes, nchw = _unpack(obj, source)
    train = _split(parts["x_train"], parts["y_train"], "train", source, nchw)
    test = _split(parts["x_test"], parts["y_test"], "test", source, nchw)
    shape_train, shape_test = tuple(train.images.shape[1:]), tuple(test.images.shape[1:])
    if shape_train != shape_test:
        raise DataError(f"{source}: train images are {_chw(shape_train)} but test images are "
                        f"{_chw(shape_test)}; both splits need the same channels and size")
    c, h, w = shape_train
    if h != w:
        raise DataError(f"{source}: images are {h}x{w} (height x width); sbrun's models take "
                        f"square images, resize to square (dataset=folder resizes for you)")
    data = TrainTest(train, test, classes or [])
    if num_classes is not None:
        check_label_range(data, num_classes, source, f"num_classes is {num_classes}")
    elif classes:
        check_label_range(data, len(classes), source, f"classes names {len(classes)} classes")
    return data


def _chw(shape) -> str:
    return f"{shape[0]} channel(s) of {shape[1]}x{shape[2]}"


# --- description ---------------------------------------------------------------------------------

def channel_stats(images: torch.Tensor, chunk_values: int = STATS_CHUNK) -> Tuple[List[float], List[float]]:
    """Per-channel mean and (population) std of uint8 [N, C, H, W] images, in [0, 1] units.

    Sums of x and x^2 are accumulated in int64 chunk by chunk, so the result is exact whatever
    the data set's size and memory stays bounded; only the final division rounds."""
    n, c, h, w = images.shape
    step = max(1, chunk_values // max(1, c * h * w))
    s1, s2 = [0] * c, [0] * c
    for start in range(0, n, step):
        x = images[start:start + step].to(torch.int64)
        s1 = [a + int(b) for a, b in zip(s1, x.sum(dim=(0, 2, 3)).tolist())]
        s2 = [a + int(b) for a, b in zip(s2, (x * x).sum(dim=(0, 2, 3)).tolist())]
    m = n * h * w
    mean = [a / m / 255.0 for a in s1]
    # Python ints: m*s2 - s1^2 is exact, so a near-constant channel does not go negative.
    std = [((m * b - a * a) ** 0.5) / m / 255.0 for a, b in zip(s1, s2)]
    return mean, std


def describe(data: TrainTest, num_classes: Optional[int] = None, source: str = "dataset") -> dict:
    """What a run needs to know about checked data: num_classes, channels, image_size, mean and
    std per channel (train images, [0, 1] units) and class names.

    num_classes is max label + 1 over both splits unless given, and at least the number of class
    names. A channel that is constant over the whole train set gets std 1 (nothing to scale)."""
    names = list(data.classes)
    if num_classes is not None:
        if num_classes < len(names):
            raise DataError(f"{source}: num_classes is {num_classes} but the data names "
                            f"{len(names)} classes; leave num_classes unset or give at least {len(names)}")
        check_label_range(data, num_classes, source, f"num_classes is {num_classes}")
        k = num_classes
    else:
        k = max(max_label(data) + 1, len(names))
    if k < 2:
        raise DataError(f"{source}: every label is 0; classification needs at least 2 classes "
                        f"(labels 0..K-1 with K >= 2)")
    images = data.train.images
    if isinstance(images, LazyImages) and len(images) > STATS_SAMPLE:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
        images = images.subset(pick.sort().values)
    mean, std = channel_stats(images)
    return {"num_classes": k, "channels": int(data.train.images.shape[1]),
            "image_size": int(data.train.images.shape[2]), "mean": mean,
            "std": [s if s > 0 else 1.0 for s in std],
            "classes": names + [str(i) for i in range(len(names), k)]}


def data_source(ds) -> str:
    """What a data message names: the user's file or folder (dataset.path), else the loader."""
    return str(ds.loader.get("path") or ds.target)


def check_subsets(data: TrainTest, ds, source: str) -> None:
    """dataset.subset / test_subset above the split's size are refused, not silently ignored:
    a run that asked for 50,000 examples of a 10,000-example set is a mistake, not a wish."""
    for key, split in (("subset", data.train), ("test_subset", data.test)):
        n = getattr(ds, key)
        if n is not None and n > len(split):
            raise DataError(f"{source}: dataset.{key}={n} is more than the {len(split)} "
                            f"{'training' if key == 'subset' else 'test'} examples; allowed: null (all) "
                            f"or an integer in [1, {len(split)}]")

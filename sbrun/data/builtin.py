"""The built-in datasets: offline digits and synthetic sets, and the torchvision sets with
friendly download errors. Each becomes a `TrainTest` of uint8 tensors (sets.py)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..messages import one_line
from .sets import DataError, ImageSet, TrainTest

DOWNLOAD_TIMEOUT_S = 60


# --- offline sets --------------------------------------------------------------------------------

def digits() -> TrainTest:
    """scikit-learn's bundled 8x8 digits (1797 images), split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.from_numpy(np.round(d.data * 255.0 / 16.0).astype(np.uint8)).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(d.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return TrainTest(ImageSet(images[train], labels[train]), ImageSet(images[test], labels[test]),
                     [str(i) for i in range(10)])


def synthetic(num_classes: int = 4, channels: int = 1, image_size: int = 8, n_train: int = 1024,
              n_test: int = 256) -> TrainTest:
    """Class prototypes blended with another class's prototype and noise, so that examples range
    from easy to ambiguous (a spread of losses for the samplers to act on). Fixed seed: the same
    data for every run."""
    g = torch.Generator().manual_seed(1234)
    if n_train < 2 or n_test < 1 or num_classes < 2:
        raise DataError(f"synthetic: n_train={n_train}, n_test={n_test}, num_classes={num_classes} are invalid; "
                        f"allowed: n_train >= 2, n_test >= 1, num_classes >= 2")
    k, c, s = num_classes, channels, image_size
    protos = torch.rand(k, c, s, s, generator=g) * 255

    def make(n: int) -> ImageSet:
        y = torch.randint(0, k, (n,), generator=g)
        other = (y + torch.randint(1, k, (n,), generator=g)) % k
        mix = (torch.rand(n, generator=g) * 0.6).view(n, 1, 1, 1)
        x = (1 - mix) * protos[y] + mix * protos[other] + torch.randn(n, c, s, s, generator=g) * 48
        return ImageSet(x.clamp(0, 255).round().to(torch.uint8), y)

    train = make(n_train)
    return TrainTest(train, make(n_test), [str(i) for i in range(k)])


# --- torchvision sets ----------------------------------------------------------------------------

# Raw MNIST-format files and their exact sizes: a truncated file is caught before parsing.
_IDX_SIZES = {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
              "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}

_WHERE = {
    "cifar10": "cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) in {root}",
    "cifar100": "cifar-100-python.tar.gz (or its extracted cifar-100-python/) in {root}",
    "svhn": "train_32x32.mat and test_32x32.mat (and extra_32x32.mat with dataset.extra) in {root}",
    "mnist": "the four *-ubyte files (train/t10k images and labels) in {root}/MNIST/raw",
    "fashion_mnist": "the four *-ubyte files (train/t10k images and labels) in {root}/FashionMNIST/raw",
}


def _idx_problems(raw: Path) -> List[Tuple[Path, str]]:
    """Missing or wrongly sized raw idx files, as (path, description)."""
    out = []
    for name, size in _IDX_SIZES.items():
        p = raw / name
        if not p.exists():
            if not (raw / (name + ".gz")).exists():
                out.append((p, "missing"))
        elif p.stat().st_size != size:
            out.append((p, f"truncated or corrupted ({p.stat().st_size} of {size} bytes)"))
    return out


def _set_aside(files: List[Path]) -> Optional[str]:
    """Rename corrupted files to *.corrupt so that a download can replace them.
    Returns why that was impossible, or None."""
    for p in files:
        try:
            os.replace(p, p.with_name(p.name + ".corrupt"))
        except OSError as err:
            return f"cannot move it aside ({err.strerror})"
    return None


def _put_back(files: List[Path]) -> None:
    """Undo _set_aside after a failed download: the user's files stay where they were."""
    for p in files:
        aside = p.with_name(p.name + ".corrupt")
        if aside.exists() and not p.exists():
            os.replace(aside, p)


def offline() -> bool:
    """SBRUN_OFFLINE=1 skips download attempts (no waiting on a network that is not there)."""
    return os.environ.get("SBRUN_OFFLINE", "").lower() in ("1", "true", "yes")


def _fetch(name: str, root: Path, build: Callable[[bool], Tuple[object, object]],
           check: Callable[[], List[Tuple[Path, str]]] = lambda: []):
    """Load from `root`; if files are missing or corrupted, download once; else fail in one line.
    A failed download removes the folders it created, so a typo in data_dir leaves nothing behind."""
    problems = check()
    corrupted = [p for p, what in problems if what != "missing"]
    if not problems:
        try:
            return build(False)
        except Exception as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
            problem = "the files are missing or corrupted" if "not found" in str(err).lower() else \
                one_line(err, lines=None, limit=160)
    else:
        problem = f"{problems[0][0].name} is {problems[0][1]}"
    where = _WHERE[name].format(root=root)
    if offline():
        raise DataError(f"{name}: {problem} in {root}, and SBRUN_OFFLINE=1 forbids a download; put {where}")
    if corrupted and (blocked := _set_aside(corrupted)):
        raise DataError(f"{name}: {problem} in {root} and {blocked}; replace it with a good copy ({where})")
    created = first_missing(root)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)     # an unreachable mirror fails instead of hanging
    try:
        root.mkdir(parents=True, exist_ok=True)
        return build(True)
    except Exception as err:
        _put_back(corrupted)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise DataError(f"{name}: {problem} in {root} and the download failed "
                        f"({one_line(err, lines=None, limit=160)}); offline, put {where}") from None
    finally:
        socket.setdefaulttimeout(previous)


def first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of `path` that does not exist yet (what a download would create)."""
    path = path.absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _as_nchw(data, channels_last: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(data))
    if t.dim() == 3:
        t = t.unsqueeze(1)
    elif channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().to(torch.uint8)


def _labels(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


def _tv_pair(name: str, root: Path, cls_name: str, check=lambda: []) -> TrainTest:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    train, test = _fetch(name, root, lambda dl: (cls(str(root), train=True, download=dl),
                                                 cls(str(root), train=False, download=dl)), check)
    nhwc = cls_name.startswith("CIFAR")
    return TrainTest(ImageSet(_as_nchw(train.data, nhwc), _labels(train.targets)),
                     ImageSet(_as_nchw(test.data, nhwc), _labels(test.targets)), list(train.classes))


def cifar10(root: str) -> TrainTest:
    return _tv_pair("cifar10", Path(root), "CIFAR10")


def cifar100(root: str) -> TrainTest:
    return _tv_pair("cifar100", Path(root), "CIFAR100")


def mnist(root: str) -> TrainTest:
    root = Path(root)
    return _tv_pair("mnist", root, "MNIST", lambda: _idx_problems(root / "MNIST" / "raw"))


def fashion_mnist(root: str) -> TrainTest:
    root = Path(root)
    return _tv_pair("fashion_mnist", root, "FashionMNIST", lambda: _idx_problems(root / "FashionMNIST" / "raw"))


def svhn(root: str, extra: bool = False) -> TrainTest:
    """SVHN's train split (plus the 531k "extra" images with extra=true) and its test split."""
    import torchvision.datasets as tvd

    root = Path(root)
    splits = ["train", "test"] + (["extra"] if extra else [])
    sets = _fetch("svhn", root, lambda dl: tuple(tvd.SVHN(str(root), split=s, download=dl) for s in splits))
    train_sets = [sets[0]] + list(sets[2:])
    train = ImageSet(torch.cat([_as_nchw(s.data, False) for s in train_sets]),
                     torch.cat([_labels(s.labels) for s in train_sets]))
    test = ImageSet(_as_nchw(sets[1].data, False), _labels(sets[1].labels))
    return TrainTest(train, test, [str(i) for i in range(10)])

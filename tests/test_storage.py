"""Images beyond memory (dataset.storage) and selection-aware loading (examples_loaded)."""
from __future__ import annotations

import pickle

import pandas as pd
import pytest
import torch

from conftest import TIME_COLUMNS, make_config
from sbrun.build import load_data
from sbrun.config import ConfigError
from sbrun.data.folder import RRC_SCALE, load_folder, random_resized_box
from sbrun.data.make_folder import make_image_folder
from sbrun.data.sets import DataError
from sbrun.data.storage import FileImages, LazyImages, MemmapImages, pick_storage
from sbrun.runner import train

RUN = ["dataset=folder", "dataset.image_size=16", "model=cnn", "model.width=8", "data_path=loader", "num_workers=2",
       "epochs=3", "batch_size=32", "plots=false", "progress=off", "deterministic=true", "checkpoint.enabled=false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"), n_train=300, n_test=80, size=20, classes=4, seed=0)


def run_metrics(folder, tmp_path, storage, *extra):
    cfg = make_config(RUN + [f"dataset.path={folder}", f"dataset.storage={storage}", *extra])
    train(cfg, tmp_path / storage)
    return pd.read_csv(tmp_path / storage / "metrics.csv")


def test_memory_memmap_and_files_give_the_same_metrics(folder, tmp_path):
    """The three storages decode the same pixels and the loader path seeds each example's
    augmentation by (seed, epoch, index), so every non-time column is equal, bit for bit."""
    got = {s: run_metrics(folder, tmp_path, s, "sampler=sb", "dataset.flip=true", "dataset.crop_padding=2")
           for s in ("memory", "memmap", "files")}
    keep = [c for c in got["memory"].columns if c not in TIME_COLUMNS]
    assert got["memory"]["examples_loaded"].sum() > 0
    for s in ("memmap", "files"):
        pd.testing.assert_frame_equal(got["memory"][keep], got[s][keep], check_exact=True)


@pytest.mark.parametrize("storage", ["files", "memory"])
def test_a_stale_epoch_reads_only_what_it_trains_on_and_traditional_reads_everything(folder, tmp_path, storage):
    sb = run_metrics(folder, tmp_path, storage, "sampler=stale_sb", "sampler.staleness=3", "epochs=4")
    backprops = sb["backprops"].diff().fillna(sb["backprops"].iloc[0])
    # epoch 1 primes (all 300), epoch 2 scores all (fresh), epochs 3-4 are stale: they read what they
    # select, which is what they backpropagate give or take the carried remainder (< one batch)
    assert sb["examples_loaded"].tolist()[:2] == [300, 300]
    for loaded, bp in zip(sb["examples_loaded"][2:], backprops[2:]):
        assert abs(loaded - bp) < 32 and loaded < 300 / 2
    trad = run_metrics(folder, tmp_path / "t", storage, "sampler=traditional")
    assert trad["examples_loaded"].tolist() == [300, 300, 300]


def test_a_random_subset_reads_only_its_subset(folder, tmp_path):
    df = run_metrics(folder, tmp_path, "files", "sampler=random", "sampler.prob=0.25", "sampler.prime_epochs=0")
    # Bernoulli(0.25) of 300: sd 7.5, so +-40 is over 5 sd
    assert (df["examples_loaded"] < 300 * 0.25 + 40).all() and (df["examples_loaded"] > 300 * 0.25 - 40).all()


def test_lazy_views_read_nothing_until_indexed_and_compose(folder):
    data = load_folder(folder, 16, storage="memmap")
    images = data.train.images
    assert isinstance(images, MemmapImages) and images.shape == (300, 3, 16, 16)
    memory = load_folder(folder, 16, storage="memory").train.images
    view = images.subset(torch.tensor([5, 7, 9])).subset(torch.tensor([2, 0]))
    assert torch.equal(view[torch.tensor([0, 1])], memory[torch.tensor([9, 5])])
    clone = pickle.loads(pickle.dumps(view))         # a worker gets the path, not the pages
    assert clone._array is None and torch.equal(clone[torch.tensor([1])], memory[torch.tensor([5])])
    files = load_folder(folder, 16, storage="files").train.images
    assert isinstance(files, FileImages) and torch.equal(files[torch.arange(10)], memory[:10])


def test_the_subset_and_validation_split_stay_on_disk(folder):
    cfg = make_config(RUN + [f"dataset.path={folder}", "dataset.storage=files", "dataset.subset=200",
                             "dataset.val_fraction=0.1"])
    data = load_data(cfg, torch.device("cpu"))
    assert isinstance(data.train.images, LazyImages) and isinstance(data.val.images, LazyImages)
    assert len(data.train) == 180 and len(data.val) == 20


def test_random_resized_crop_boxes_follow_torchvision():
    """The same distribution as torchvision's RandomResizedCrop.get_params (drawn from the global
    RNG there, from the example's stream here): 2,000 boxes each; the area fraction's sd is about
    0.25, so the means' standard error of the difference is about 0.008 and 0.035 is over 4 of them."""
    from torchvision.transforms import RandomResizedCrop
    g = torch.Generator().manual_seed(0)
    ours, theirs = [], []
    torch.manual_seed(0)
    for _ in range(2000):
        left, top, right, bottom = random_resized_box(300, 200, g)
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        assert 3 / 4 - 0.02 <= (right - left) / (bottom - top) <= 4 / 3 + 0.02
        ours.append((right - left) * (bottom - top) / (300 * 200))
        i, j, h, w = RandomResizedCrop.get_params(torch.empty(3, 200, 300), [0.08, 1.0], [3 / 4, 4 / 3])
        theirs.append(h * w / (300 * 200))
    assert min(ours) >= RRC_SCALE[0] * 0.95
    assert abs(sum(ours) / 2000 - sum(theirs) / 2000) < 0.035
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert random_resized_box(300, 200, a) == random_resized_box(300, 200, b)     # reproducible per stream


def test_imagenet_shaped_folder_trains_with_random_resized_crops(tmp_path):
    root = make_image_folder(tmp_path / "inet", n_train=64, n_test=16, size=40, classes=2, split="val", vary=0.5)
    cfg = make_config(["dataset=imagenet", f"dataset.path={root}", "dataset.image_size=32", "model=cnn",
                       "model.width=8", "epochs=1", "batch_size=16", "plots=false", "progress=off", "num_workers=0",
                       "checkpoint.enabled=false"])
    assert cfg.dataset.storage == "files"
    s = train(cfg, tmp_path / "run")
    assert s["status"] == "finished" and s["n_train"] == 64


def test_storage_refusals_are_one_line(folder):
    with pytest.raises(ConfigError, match=r"dataset.storage=files is invalid for dataset=digits.*allowed"):
        load_data(make_config(["dataset=digits", "dataset.storage=files"]), torch.device("cpu"))
    with pytest.raises(DataError, match="random_resized_crop needs the full-resolution files"):
        load_folder(folder, 16, storage="memmap", random_resized_crop=True)
    with pytest.raises(ConfigError, match="data_path=tensor is invalid with dataset.storage=memmap"):
        train(make_config(RUN + [f"dataset.path={folder}", "dataset.storage=memmap", "data_path=tensor"]), "unused")
    with pytest.raises(ConfigError, match="dataset.storage"):
        make_config(["dataset.storage=disk"])


def test_auto_keeps_small_data_in_memory_and_large_data_on_disk(monkeypatch):
    import sbrun.data.storage as storage
    monkeypatch.setattr(storage, "ram_bytes", lambda: 8 << 30)
    assert pick_storage("auto", 1 << 30, "x") == "memory"
    assert pick_storage("auto", 4 << 30, "x") == "memmap"
    assert pick_storage("files", 1, "x") == "files"

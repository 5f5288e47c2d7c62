"""The validation split (dataset.val_fraction, dataset.val_seed): held out of the training set,
the same for every run seed and method, with clean labels, evaluated at every row."""
import json

import pandas as pd
import pytest
import torch

from conftest import TINY, make_config, run_sbrun
from sbrun.build import load_data, load_raw
from sbrun.data import DataError
from sbrun.data.noise import subset
from sbrun.data.split import split_indices

SPLIT = ["dataset.val_fraction=0.25", "dataset.val_seed=3"]


def test_split_indices_are_disjoint_cover_the_set_and_follow_only_the_val_seed():
    keep, val = split_indices(100, 0.25, seed=3)
    assert val.numel() == 25 and keep.numel() == 75
    assert not set(keep.tolist()) & set(val.tolist())
    assert sorted(keep.tolist() + val.tolist()) == list(range(100))
    again, _ = split_indices(100, 0.25, seed=3)
    other, _ = split_indices(100, 0.25, seed=4)
    assert torch.equal(keep, again) and not torch.equal(keep, other)


def test_a_split_that_holds_out_nothing_is_one_line_naming_the_key():
    assert split_indices(2, 0.49, 0)[1].numel() == 1          # round(0.98) = 1: one on each side
    with pytest.raises(DataError, match=r"^dataset\.val_fraction=0\.001 holds out 0 of 100"):
        split_indices(100, 0.001, 0)


def _raw_train(cfg):
    return subset(load_raw(cfg.dataset, cfg.data_dir, cfg.seed).train, cfg.dataset.subset)


def test_every_run_seed_trains_on_the_rest_and_validates_on_the_same_clean_examples():
    a = make_config(TINY + SPLIT + ["seed=0", "label_noise=0.3"])
    b = make_config(TINY + SPLIT + ["seed=1", "label_noise=0.3"])
    da, db = load_data(a, torch.device("cpu")), load_data(b, torch.device("cpu"))
    raw = _raw_train(a)
    keep, val = split_indices(len(raw), 0.25, seed=3)
    assert len(da.train) == len(keep) == 384 and len(da.val) == len(val) == 128
    # the training images are exactly the kept ones, the validation ones the held-out ones
    assert torch.equal(da.train.images, raw.images[keep]) and torch.equal(da.val.images, raw.images[val])
    # the same split for both run seeds; the noise differs (it follows the run seed) ...
    assert torch.equal(da.val.images, db.val.images) and torch.equal(da.val.labels, db.val.labels)
    assert not torch.equal(da.noisy, db.noisy)
    # ... and touches only the training part: validation labels are the true ones
    assert torch.equal(da.val.labels, raw.labels[val])
    assert int(da.noisy.sum()) == round(0.3 * 384)


def test_no_split_by_default_leaves_the_training_set_whole():
    cfg = make_config(TINY)
    data = load_data(cfg, torch.device("cpu"))
    assert data.val is None and len(data.train) == 512


def test_val_metrics_appear_in_every_row_and_the_split_is_recorded(run_tiny):
    run_dir, summary = run_tiny(*SPLIT)
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert len(rows) == 3
    assert rows[["val_loss", "val_acc", "val_error"]].notna().all().all()
    assert ((rows["val_acc"] > 0) & (rows["val_acc"] <= 1)).all()
    assert (rows["val_error"] - (1 - rows["val_acc"])).abs().max() < 1e-12
    # the validation set (128 held out) is not the test set (128 of its own): the curves differ
    assert not rows["val_loss"].equals(rows["test_loss"])
    assert summary["params"]["dataset_val_fraction"] == 0.25 and summary["params"]["dataset_val_seed"] == 3
    assert summary["n_train"] == 384


def test_without_a_split_there_are_no_val_columns(run_tiny):
    run_dir, summary = run_tiny()
    assert not any(c.startswith("val_") for c in pd.read_csv(run_dir / "metrics.csv").columns)
    assert summary["params"]["dataset_val_fraction"] is None


@pytest.mark.parametrize("override,allowed", [("dataset.val_fraction=0.5", "[0, 0.5)"),
                                              ("dataset.val_fraction=-0.1", "[0, 0.5)"),
                                              ("dataset.val_seed=-1", "an integer >= 0"),
                                              ("dataset.val_fraction=0.0001", "at least one example")])
def test_bad_split_values_are_one_line_exit_2_and_nothing_written(tmp_path, override, allowed):
    res = run_sbrun(*TINY, override, f"out_dir={tmp_path}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert override.split("=")[0] in lines[0] and allowed in lines[0]
    assert not list(tmp_path.glob("runs/*/metrics.csv"))


def test_changing_the_split_on_resume_is_refused(run_tiny, tiny_config):
    from sbrun.config import ConfigError
    from sbrun.runner import train

    run_dir, _ = run_tiny(*SPLIT, "epochs=1")
    with pytest.raises(ConfigError, match="dataset.val_fraction"):
        train(tiny_config("dataset.val_fraction=0.1", "dataset.val_seed=3", "epochs=2"), run_dir)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["config"]["dataset"]["val_fraction"] == 0.25

"""Mistakes a newcomer makes with keys, data and costs files (issue 18): each gets one line that
names the real key or file and what is allowed, and nothing is written into the user's data;
user data trains on a recipe that learns; help texts say what each key and flag means."""
import importlib.util
import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, TINY, run_sbrun
from sbrun.budget import costs_mismatch
from sbrun.outputs import log_line
from sbrun.runner import training_notes


def recipe_script():
    spec = importlib.util.spec_from_file_location("user_data_recipe", REPO / "scripts" / "user_data_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(res):
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# --- 3. logger keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("tracker,typo,allowed", [
    ("wandb", "projct", "project"), ("tensorboard", "flsh", "hparam_metrics"), ("mlflow", "uri2", "tracking_uri")])
def test_a_logger_key_typo_names_the_tracker_and_its_keys(tmp_path, tracker, typo, allowed):
    res = run_sbrun(f"logger={tracker}", f"logger.{tracker}.{typo}=x", f"out_dir={tmp_path}")
    line = one_line(res)
    assert res.returncode == 2 and f"logger.{tracker}.{typo}" in line and f"logger={tracker};" in line
    assert allowed in line.split("allowed:")[1] and "logger=logger" not in line


# --- 6. a required path --------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,example", [("arrays", "dataset.path=FILE.npz"), ("folder", "dataset.path=DIR")])
def test_a_missing_dataset_path_names_dataset_path(tmp_path, dataset, example):
    res = run_sbrun(f"dataset={dataset}", f"out_dir={tmp_path}")
    line = one_line(res)
    assert res.returncode == 2 and "dataset.path is required" in line and example in line
    assert "loader" not in line


# --- 7. data errors name the file; nothing is written into the data folder -----------------------

def test_a_one_class_folder_is_refused_naming_it_and_left_untouched(tmp_path):
    arrays = recipe_script().make_arrays(n_train=12, n_test=3)
    arrays = {**arrays, "y_train": np.zeros(12, np.int64), "y_test": np.zeros(3, np.int64)}
    root = recipe_script().write_folder(tmp_path / "imgs", arrays)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    res = run_sbrun("dataset=folder", f"dataset.path={root}", f"out_dir={tmp_path / 'out'}")
    line = one_line(res)
    assert res.returncode == 2 and str(root / "train") in line and "one class" in line
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before      # no .sbrun-cache
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels,extra,expected", [
    (0, [], "every label is 0"),
    (3, ["dataset.num_classes=2"], "labels go up to 2"),
])
def test_npz_class_errors_name_the_file(tmp_path, labels, extra, expected):
    arrays = recipe_script().make_arrays(n_train=12, n_test=3)
    arrays["y_train"] = np.arange(12) % max(labels, 1)
    arrays["y_test"] = np.arange(3) % max(labels, 1)
    path = recipe_script().write_npz(tmp_path / "one.npz", arrays)
    res = run_sbrun("dataset=arrays", f"dataset.path={path}", *extra, f"out_dir={tmp_path / 'out'}")
    line = one_line(res)
    assert res.returncode == 2 and line.startswith(f"sbrun: error: {path}:") and expected in line


# --- 8. no silent acceptance ---------------------------------------------------------------------

@pytest.mark.parametrize("key,n", [("subset", 512), ("test_subset", 128)])
def test_a_subset_larger_than_the_data_is_refused(tmp_path, key, n):
    res = run_sbrun(*TINY, f"dataset.{key}=999999", f"out_dir={tmp_path / 'out'}")
    line = one_line(res)
    assert res.returncode == 2 and f"dataset.{key}=999999" in line and f"[1, {n}]" in line
    assert not (tmp_path / "out").exists()


def test_a_costs_file_from_another_setup_is_said_once(tmp_path):
    costs = {"f_sel": 1e-4, "fb": 3e-4, "dataset": "mnist", "model": "cnn", "precision": "fp32"}
    (tmp_path / "costs.json").write_text(json.dumps(costs))
    res = run_sbrun(*TINY, "epochs=1", f"budget.costs={tmp_path / 'costs.json'}", f"out_dir={tmp_path}", "name=c")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("was measured on another setup") == 1
    assert "dataset 'mnist' there, 'synthetic' here" in res.stdout and "model 'cnn' there, 'mlp' here" in res.stdout
    same = {**costs, "dataset": "synthetic", "model": "mlp"}
    (tmp_path / "costs.json").write_text(json.dumps(same))
    res = run_sbrun(*TINY, "epochs=1", f"budget.costs={tmp_path / 'costs.json'}", f"out_dir={tmp_path}", "name=d")
    assert res.returncode == 0 and "another setup" not in res.stdout


def test_costs_mismatch_compares_only_what_the_file_records():
    assert costs_mismatch({"model": "cnn"}, {"model": "cnn", "image_size": 28}) == ""
    assert costs_mismatch({"image_size": 32}, {"image_size": 28}) == "image_size 32 there, 28 here"


# --- 9. user data learns; divergence and "nothing kept" are said as such ---------------------------

@pytest.mark.parametrize("kind", ["folder", "arrays"])
def test_user_data_trains_on_a_recipe_whose_loss_goes_down(tmp_path, kind):
    script = recipe_script()
    arrays = script.make_arrays()          # 120 images, 3 classes, 32x32 RGB
    path = (script.write_folder(tmp_path / "imgs", arrays) if kind == "folder"
            else script.write_npz(tmp_path / "d.npz", arrays))
    res = run_sbrun(f"dataset={kind}", f"dataset.path={path}", "sampler=traditional", "epochs=3", "plots=false",
                    "progress=off", f"out_dir={tmp_path / 'out'}", "name=u")
    assert res.returncode == 0, res.stderr
    loss = pd.read_csv(tmp_path / "out" / "runs" / "u" / "metrics.csv")["train_loss"].tolist()
    assert loss[-1] < loss[0] and max(loss) < 10 * loss[0], loss
    assert "may be diverging" not in res.stdout


def _notes(rows, last_loss, caplog):
    parts = SimpleNamespace(dist=SimpleNamespace(rank=0), cfg=SimpleNamespace(optim=SimpleNamespace(lr=0.1)))
    run = SimpleNamespace(rows=[], last_loss=last_loss)
    note = training_notes(parts, run)
    with caplog.at_level(logging.WARNING, logger="sbrun"):
        for row in rows:
            run.rows.append(row)
            note(row)
    return [r.getMessage() for r in caplog.records]


def test_the_divergence_guard_says_once_and_names_optim_lr(caplog):
    rows = [{"epoch": e, "train_loss": x, "backprop_frac": 1.0} for e, x in enumerate([1.1, 17.9, 100.7, 2.0], 1)]
    said = _notes(rows, torch.ones(4), caplog)
    assert len(said) == 1 and "epoch 2" in said[0] and "optim.lr" in said[0] and "diverging" in said[0]
    assert _notes(rows[:1] + [{**rows[1], "train_loss": 9.0}], torch.ones(4), caplog) == said   # under 10x: silent


def test_nothing_kept_because_every_loss_is_0_is_said_as_that(caplog):
    rows = [{"epoch": 1, "train_loss": 0.3, "backprop_frac": 1.0},
            {"epoch": 2, "train_loss": float("nan"), "backprop_frac": 0.0},
            {"epoch": 3, "train_loss": float("nan"), "backprop_frac": 0.0}]
    said = _notes(rows, torch.zeros(8), caplog)
    assert len(said) == 1 and "every training loss is exactly 0" in said[0] and "epoch 2" in said[0]
    cfg = SimpleNamespace(epochs=3, budget=SimpleNamespace(amount=None), eval=SimpleNamespace(every=None))
    line = log_line({**rows[1], "test_acc": 1.0, "lr": 0.1, "train_time_s": 1.0}, cfg)
    assert "nan" not in line and "nothing backpropagated" in line


# --- 10. help texts ------------------------------------------------------------------------------

def test_sbrun_help_gives_each_key_a_one_line_meaning(capsys):
    from sbrun.config import key_docs

    res = run_sbrun("--help")
    assert res.returncode == 0
    keys = [k for k, _, _ in key_docs()]
    assert {"beta", "optim.lr", "budget.amount", "checkpoint.keep", "resume"} <= set(keys)
    for key, _, text in key_docs():
        assert text, f"{key} has no description in the schema"
        assert any(ln.split()[0] == key and text in ln for ln in res.stdout.splitlines() if ln.strip()), key
    assert "sbrun-compare" in res.stdout      # the equal-compute protocol is found from --help (issue 19)


def test_bench_help_describes_every_flag_and_the_cpu_presets_data():
    out = subprocess.run([sys.executable, "-m", "sbrun.bench", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    options = out.split("options:", 1)[1]
    for flag in ("--data-dir", "--loader-workers", "--out"):
        entry = options.split(f"\n  {flag} ", 1)[1].split("\n  -", 1)[0]     # up to the next option
        words = entry.split()[1:]                                           # after the metavar
        assert len(words) >= 3, (flag, entry)
    assert "MNIST" in options.split("--preset", 1)[1].split("\n  -", 1)[0]


def test_readme_says_to_activate_the_venv_and_that_timings_vary():
    text = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    assert text.count("on 2 cores; slower under load") >= 2

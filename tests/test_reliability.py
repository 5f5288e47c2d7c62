"""Checkpoints, exact resume, graceful stops, sweep failure isolation and bad input."""
import errno
import io
import json
import os
import random

import pandas as pd
import pytest
import torch

from conftest import RESUME_RUN, TINY, assert_same_run, run_killed, run_sbrun
from sbrun import checkpoint as ckpt
from sbrun import records
from sbrun.config import ConfigError
from sbrun.runner import train

SAMPLER_ARGS = {"stale_sb": ["sampler=stale_sb", "sampler.staleness=2"],
                "kath18": ["sampler=kath18", "sampler.variable_start=false"]}

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs to compare resumed ones against, per sampler."""
    base = tmp_path_factory.mktemp("ref")
    out = {}
    for sampler in ("stale_sb", "kath18"):
        res = run_sbrun(*RESUME_RUN, *SAMPLER_ARGS[sampler], f"out_dir={base}", f"name={sampler}")
        assert res.returncode == 0, res.stderr
        out[sampler] = base / "runs" / sampler
    return out


@pytest.mark.parametrize("sampler", ["stale_sb", "kath18"])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, reference, sampler):
    # A "random" (seeded) step inside epochs 2-4; stale_sb runs ~34 steps in all, kath18 ~24.
    after = random.Random(sampler).randint(*{"stale_sb": (17, 30), "kath18": (7, 22)}[sampler])
    args = [*RESUME_RUN, *SAMPLER_ARGS[sampler], f"out_dir={tmp_path}", "name=job"]
    killed = run_killed(tmp_path, after, "SIGKILL", *args)
    assert killed.returncode == -9
    run = tmp_path / "runs" / "job"
    partial = pd.read_csv(run / "metrics.csv")          # whole rows only, even after SIGKILL
    assert 1 <= len(partial) < 4 and not partial[["epoch", "test_acc", "backprops"]].isna().any().any()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_run(run, reference[sampler])


def test_sigterm_stops_cleanly_and_the_checkpoint_resumes_exactly(tmp_path, reference):
    args = [*RESUME_RUN, "sampler=stale_sb", "sampler.staleness=2", f"out_dir={tmp_path}", "name=job"]
    stopped = run_killed(tmp_path, 21, "SIGTERM", *args)
    assert stopped.returncode == 3, stopped.stderr
    run = tmp_path / "runs" / "job"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped"
    latest = ckpt.latest(run)
    state = ckpt.load(latest)                           # loadable, with weights_only=True
    assert state["chunk"] is not None and state["chunk"] > 0    # a mid-epoch checkpoint
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference["stale_sb"])


def test_a_diverging_job_fails_alone_in_its_sweep(tmp_path):
    res = run_sbrun("-m", *TINY, "optim.lr=0.05,1e30", f"out_dir={tmp_path}", "name=sw")
    assert res.returncode == 1
    sweep = tmp_path / "multirun" / "sw"
    report = json.loads((sweep / "sweep_summary.json").read_text())
    assert len(report["finished"]) == 1 and len(report["failed"]) == 1
    assert "non-finite" in report["failed"][0]["reason"]
    failed = sweep / report["failed"][0]["job"]
    assert json.loads((failed / "summary.json").read_text())["status"] == "failed"
    assert "1 job(s) failed" in res.stderr


def test_rerunning_a_sweep_skips_finished_and_resumes_unfinished_jobs(tmp_path):
    args = ["-m", "sampler=traditional,sb", *TINY, f"out_dir={tmp_path}", "name=sw"]
    # 3 epochs x 16 steps for the first job; the second primes for 16 steps, then dies in epoch 2.
    killed = run_killed(tmp_path, 68, "SIGKILL", *args)
    assert killed.returncode == -9
    sweep = tmp_path / "multirun" / "sw"
    # job directories are named by their overrides: order them as the sweep ran them
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and (p / "summary.json").exists()),
                  key=lambda p: json.loads((p / "summary.json").read_text())["params"]["sampler"] == "sb")
    first_mtime = (jobs[0] / "metrics.csv").stat().st_mtime_ns
    statuses = [json.loads((j / "summary.json").read_text())["status"] for j in jobs]
    assert statuses == ["finished", "running"]
    again = run_sbrun(*args)
    assert again.returncode == 0, again.stderr
    assert "skipping" in again.stdout and "resuming" in again.stdout
    assert (jobs[0] / "metrics.csv").stat().st_mtime_ns == first_mtime
    assert [json.loads((j / "summary.json").read_text())["status"] for j in jobs] == ["finished", "finished"]
    assert len(pd.read_csv(sweep / "runs.csv")) == 6


def test_truncated_dataset_files_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SBRUN_OFFLINE", "1")
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\0" * 1000)
    res = run_sbrun("dataset=mnist", f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "train-images-idx3-ubyte" in lines[0]
    assert (raw / "train-images-idx3-ubyte").exists()        # nothing moved or lost
    assert not (tmp_path / "out").exists()                   # and no run directory left behind


def test_missing_dataset_offline_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SBRUN_OFFLINE", "1")
    res = run_sbrun("dataset=cifar10", f"data_dir={tmp_path / 'empty'}", f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cifar-10-python.tar.gz" in lines[0] and str(tmp_path / "empty") in lines[0]
    # one sentence of ours, not torchvision's advice about download=True spliced in
    assert "download=True" not in lines[0] and "SBRUN_OFFLINE=1" in lines[0]
    assert not (tmp_path / "out").exists()


def test_tampered_checkpoints_are_refused(run_tiny, tmp_path):
    run, _ = run_tiny()
    path = ckpt.latest(run)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="SHA-256"):
        ckpt.load(path)
    # A file that would run code on unpickling, even with a matching digest, is refused too.
    evil = tmp_path / "ckpt" / "e00009.pt"
    buf = io.BytesIO()
    torch.save({"model": {}, "payload": os.system}, buf)
    evil.parent.mkdir(parents=True)
    evil.write_bytes(buf.getvalue())
    import hashlib
    records.write_json(evil.with_suffix(".json"), {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()})
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load(evil)


def test_tampered_checkpoint_stops_a_resume_with_one_line(run_tiny, tmp_path):
    run, _ = run_tiny("epochs=3")
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "stopped"
    (run / "summary.json").write_text(json.dumps(summary))
    path = ckpt.latest(run)
    path.write_bytes(path.read_bytes()[:-10])
    res = run_sbrun(f"resume={run}")
    assert res.returncode == 2          # bad input (issue 18): the run directory is left as it was
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "new name=" in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"


def test_a_checkpoint_from_another_config_is_refused(run_tiny, tiny_config):
    run, _ = run_tiny("epochs=2")
    with pytest.raises(ConfigError, match="model"):      # caught from the run directory's summary
        train(tiny_config("epochs=3", "model.width=16"), run)
    (run / "summary.json").unlink()
    with pytest.raises(ConfigError, match="dataset.n_train"):   # caught from the checkpoint itself
        train(tiny_config("epochs=3", "dataset.n_train=256"), run)


def test_resuming_a_finished_run_is_refused(run_tiny, tmp_path):
    run, _ = run_tiny("epochs=2")
    res = run_sbrun(f"resume={run}")
    assert res.returncode == 2 and "already finished" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    other = run_sbrun(f"resume={run}", "model=linear")
    assert other.returncode == 2 and "model" in other.stderr


def test_resuming_a_finished_run_with_more_epochs_extends_it(run_tiny, tmp_path):
    run, _ = run_tiny("epochs=2")
    res = run_sbrun(f"resume={run}", "epochs=3")
    assert res.returncode == 0, res.stderr
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2, 3]


def test_a_budget_that_cannot_fit_one_epoch(tmp_path):
    res = run_sbrun(*TINY, "hours=1e-9", f"out_dir={tmp_path}")
    assert res.returncode == 2
    assert "hours" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    records.atomic_write(target, b"epoch\n1\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(records.os, "fsync", full_disk)
    with pytest.raises(records.OutputError, match="No space left") as err:
        records.atomic_write(target, b"epoch\n1\n2\n")
    assert "\n" not in str(err.value)
    assert target.read_bytes() == b"epoch\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]     # no temp file left


def test_an_unwritable_results_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_sbrun(*TINY, f"out_dir={blocker / 'results'}")
    assert res.returncode == 2 and "out_dir" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

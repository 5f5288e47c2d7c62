"""Shared fixtures: compose configs through Hydra's compose API and run tiny trainings in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pandas as pd
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))

from hydra import compose, initialize_config_dir  # noqa: E402

from sbrun.compose import config_dir, validate  # noqa: E402  (registers the schema and resolvers)
from sbrun.config import Config  # noqa: E402
from sbrun.runner import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# A synthetic run that trains in well under a second.
TINY = ["dataset=synthetic", "model=mlp", "model.width=32", "dataset.n_train=512", "dataset.n_test=128",
        "batch_size=32", "epochs=3", "plots=false", "progress=off", "optim.lr=0.05"]
# The tiny run the kill-and-resume checks interrupt: deterministic, with noisy labels to select on.
RESUME_RUN = TINY + ["epochs=4", "deterministic=true", "label_noise=0.1"]
# metrics.csv columns that measure time: they differ between two otherwise identical runs.
TIME_COLUMNS = ["train_time_s", "wall_time_s", "epoch_time_s", "time_select_fwd_s", "time_train_fwd_s",
                "time_backward_s", "time_other_s", "time_data_s", "time_bookkeeping_s"]


def make_config(overrides: List[str] = ()) -> Config:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


@pytest.fixture
def tiny_config():
    def _make(*overrides: str) -> Config:
        return make_config(TINY + list(overrides))
    return _make


@pytest.fixture
def run_tiny(tmp_path, tiny_config):
    """Train a tiny synthetic run in-process; returns (run_dir, summary)."""
    counter = iter(range(10_000))

    def _run(*overrides: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / f"run{next(counter)}"
        summary = train(tiny_config(*overrides), run_dir)
        return run_dir, summary
    return _run


def sbrun_cli(*args: str, cwd: Path, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    """Run the installed `sbrun` console script (the real CLI path) in a subprocess."""
    exe = Path(sys.executable).with_name("sbrun")
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def run_sbrun(*args: str) -> subprocess.CompletedProcess:
    """Run `sbrun` in this process (the same preflight, Hydra app and task as the console script,
    without paying the interpreter start-up and torch import again)."""
    import contextlib
    import io

    from sbrun.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["sbrun", *args], code, out.getvalue(), err.getvalue())


def run_killed(tmp_path, after, sig, *args, sleep=0.0):
    """Run `sbrun *args` in a subprocess that sends itself `sig` after its `after`-th training step
    (tests/spies.py's KillAfter, through the callbacks group); steps up to it take `sleep` s longer."""
    kill = ["+callbacks.kill._target_=spies.KillAfter", f"+callbacks.kill.after={after}",
            f"+callbacks.kill.sig={sig}", f"+callbacks.kill.sleep={sleep}"]
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "sbrun", *args, *kill], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=240)


class Steps:
    """Every training step of the runs given `overrides` (tests/spies.py's StepLog, attached
    through the callbacks group); `read("epoch", "size")` -> [(epoch, size), ...]."""

    def __init__(self, path: Path):
        self.path = path
        self.overrides = ["+callbacks.steps._target_=spies.StepLog", f"+callbacks.steps.path='{path}'"]

    def read(self, *fields: str) -> list:
        rows = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []
        return [r[fields[0]] if len(fields) == 1 else tuple(r[f] for f in fields) for r in rows]


@pytest.fixture
def steps(tmp_path) -> Steps:
    return Steps(tmp_path / "steps.jsonl")


def comparable(run_dir):
    """A run's metrics.csv without its timing columns."""
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=TIME_COLUMNS)


def assert_same_run(a, b):
    """Two runs took the same path: equal metrics (timings aside) and equal selection counts."""
    pd.testing.assert_frame_equal(comparable(a), comparable(b))
    pd.testing.assert_frame_equal(pd.read_csv(a / "selection_counts.csv"), pd.read_csv(b / "selection_counts.csv"))


def requires_gpu(fn):
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(fn)


def pytest_sessionfinish(session, exitstatus):
    # "No tests collected" must never read as a pass (README test command and CI alike).
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

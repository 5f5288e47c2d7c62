"""Evaluation on a common compute grid (eval.every, eval.unit): rows at the same work points for
every method, one per grid point plus the run's end, per-interval columns, exact resume."""
import math

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, comparable, requires_gpu, run_killed, run_sbrun
from sbrun import grid

BUDGET = ["budget.unit=work", "budget.amount=2", "schedule=linear"]
SAMPLERS = {"traditional": ["sampler=traditional"], "sb": ["sampler=sb", "beta=2"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per sampler: the run on a 0.5-work grid, and a trace of the same training evaluated after
    every step (a grid far finer than a step). Evaluation touches nothing the training reads (the
    mlp has no batch norm), so both runs train identically."""
    from conftest import make_config
    from sbrun.runner import train

    base = tmp_path_factory.mktemp("grid")
    out = {}
    for name, args in SAMPLERS.items():
        for every in ("0.5", "1e-6"):
            d = base / f"{name}_{every}"
            train(make_config(TINY + BUDGET + args + [f"eval.every={every}"]), d)
            out[name, every] = pd.read_csv(d / "metrics.csv")
    return out


def test_rows_land_at_the_first_step_past_each_grid_point(runs):
    for name in SAMPLERS:
        rows, trace = runs[name, "0.5"], runs[name, "1e-6"]
        assert len(rows) == math.ceil(2 / 0.5)
        for k, row in enumerate(rows.itertuples(), start=1):
            first = trace[trace["work"] >= 0.5 * k - 1e-9].iloc[0]      # the step that crosses point k
            assert row.work == pytest.approx(first["work"], abs=1e-12)
            assert row.backprops == first["backprops"] and row.select_forwards == first["select_forwards"]
            assert row.test_acc == first["test_acc"]        # the same model, evaluated at the same step


def test_two_samplers_are_evaluated_at_the_same_work_points(runs):
    trad, sb = runs["traditional", "0.5"], runs["sb", "0.5"]
    # one step's work: the largest increase between consecutive steps of either method
    step = max(np.diff(runs[n, "1e-6"]["work"].to_numpy()).max() for n in SAMPLERS)
    assert len(trad) == len(sb) == 4
    assert (np.abs(trad["work"].to_numpy() - sb["work"].to_numpy()) < step).all()
    assert sb["work"].iloc[-1] == pytest.approx(2.0, abs=step) and trad["budget_frac"].iloc[-1] == 1.0
    # ... although SB passes more epochs and backpropagates fewer examples for the same work
    assert sb["epoch"].iloc[-1] > trad["epoch"].iloc[-1] + 0.25
    assert sb["backprops"].iloc[-1] < 0.8 * trad["backprops"].iloc[-1]


def test_intervals_partition_the_run(runs):
    for name in SAMPLERS:
        rows = runs[name, "0.5"]
        # each row's seconds cover the stretch since the previous row: they add up to the total
        assert rows["epoch_time_s"].sum() == pytest.approx(rows["train_time_s"].iloc[-1], rel=1e-9)
        # backprop_frac is per interval: backprops over examples passed in that interval
        d_epochs = np.diff(np.r_[0.0, rows["epoch"].to_numpy()])
        d_backprops = np.diff(np.r_[0, rows["backprops"].to_numpy()])
        assert np.allclose(rows["backprop_frac"] * 512 * d_epochs, d_backprops)
        assert rows["train_loss"].notna().all()


@pytest.mark.parametrize("every,unit,extra,points", [
    ("0.8", "work", BUDGET, 3),                       # 2 / 0.8: 2 grid rows and the end's
    ("0.5", "backprops", BUDGET, None),               # every N/2 backprops (N = 512)
    ("1", "epochs", ["epochs=3"], 3),                 # no budget: the run lasts 3 epochs
])
def test_the_grid_in_each_unit(run_tiny, every, unit, extra, points):
    run_dir, summary = run_tiny(*extra, "sampler=sb", f"eval.every={every}", f"eval.unit={unit}")
    rows = pd.read_csv(run_dir / "metrics.csv")
    used = {"work": rows["work"], "backprops": rows["backprops"] / 512, "epochs": rows["epoch"]}[unit]
    k = np.floor(used / float(every) * (1 + 1e-12))
    if points is not None:
        assert len(rows) == points
    # one row per grid point passed, none twice; the last at the run's end, on the grid or not
    assert k[0] == 1 and (np.diff(k[:-1]) == 1).all() and rows["budget_frac"].iloc[-1] == 1.0
    assert summary["params"]["eval_every"] == float(every) and summary["params"]["eval_unit"] == unit


def test_the_default_is_one_row_per_epoch(run_tiny):
    run_dir, summary = run_tiny("sampler=sb")
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert rows["epoch"].tolist() == [1, 2, 3] and summary["params"]["eval_every"] is None


def test_evaluation_time_stays_out_of_training_time(run_tiny, monkeypatch):
    slow = grid.scores

    def scores(p):
        import time
        time.sleep(0.3)
        return slow(p)
    monkeypatch.setattr(grid, "scores", scores)
    run_dir, _ = run_tiny(*BUDGET, "eval.every=1")
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert len(rows) == 2
    waited = 0.3 * np.arange(1, 3)          # the sleeps before each row's wall clock was read
    assert (rows["wall_time_s"] - rows["train_time_s"] >= waited - 0.05).all()


def test_batch_norm_is_re_estimated_before_every_grid_evaluation(run_tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(grid, "recalibrate_bn", lambda p, key: calls.append(key))
    run_dir, _ = run_tiny(*BUDGET, "eval.every=0.5", "bn_recalibrate=64")
    assert calls == list(range(len(pd.read_csv(run_dir / "metrics.csv")))) and len(calls) == 4


@pytest.mark.parametrize("override,allowed", [("eval.every=0", "a number > 0"),
                                              ("eval.unit=seconds", "work, backprops, epochs")])
def test_bad_grid_values_are_one_line_exit_2(tmp_path, override, allowed):
    res = run_sbrun(*TINY, override, f"out_dir={tmp_path}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and override.split("=")[0] in lines[0] and allowed in lines[0]


# --- resume ------------------------------------------------------------------------------------

GRID_RUN = TINY + ["deterministic=true", "label_noise=0.1", "sampler=stale_sb", "sampler.staleness=2",
                   "budget.unit=work", "budget.amount=3", "eval.every=0.4",
                   "bn_recalibrate=64"]   # constant lr: extendable


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("gridref")
    res = run_sbrun(*GRID_RUN, f"out_dir={base}", "name=ref")
    assert res.returncode == 0, res.stderr
    return base / "runs" / "ref"


@pytest.mark.parametrize("sig,after", [("SIGKILL", 23), ("SIGTERM", 29)])
def test_a_killed_grid_run_resumes_to_the_same_rows(tmp_path, reference, sig, after):
    killed = run_killed(tmp_path, after, sig, *GRID_RUN, f"out_dir={tmp_path}", "name=job")
    assert killed.returncode == (-9 if sig == "SIGKILL" else 3), killed.stderr
    run = tmp_path / "runs" / "job"
    partial = pd.read_csv(run / "metrics.csv")
    # the stop came between grid rows, mid-epoch (fractional epochs on both sides of it)
    assert 1 <= len(partial) < len(comparable(reference))
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(comparable(run), comparable(reference))


def test_extending_a_grid_run_equals_running_longer(tmp_path, reference):
    short = [a if a != "budget.amount=3" else "budget.amount=2" for a in GRID_RUN]
    assert run_sbrun(*short, f"out_dir={tmp_path}", "name=job").returncode == 0
    res = run_sbrun(*GRID_RUN, f"out_dir={tmp_path}", "name=job")
    assert res.returncode == 0, res.stderr
    # budget_frac is a fraction of the budget each row was written under; everything else agrees
    extended, longer = (comparable(d).drop(columns="budget_frac") for d in (tmp_path / "runs" / "job", reference))
    pd.testing.assert_frame_equal(extended, longer)


@requires_gpu
def test_the_grid_pauses_the_cuda_clock_between_events(run_tiny):
    # On CUDA the phase timer reads events; a grid evaluation ends and restarts its epoch clock.
    run_dir, _ = run_tiny(*BUDGET, "eval.every=0.5", "device=cuda")
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert len(rows) == 4 and (rows["epoch_time_s"] > 0).all()
    assert rows["epoch_time_s"].sum() == pytest.approx(rows["train_time_s"].iloc[-1], rel=1e-6)
    assert (rows["wall_time_s"] >= rows["train_time_s"]).all()


def test_a_grid_run_with_fewer_rows_than_epochs_merges(run_tiny):
    from sbrun.merge import load_run

    run_dir, summary = run_tiny("sampler=sb", "epochs=4", "eval.every=2", "eval.unit=epochs")
    assert summary["epochs_completed"] == 4
    table = load_run(run_dir)
    assert table["epoch"].tolist() == [2.0, 4.0] and (table["eval_every"] == 2.0).all()

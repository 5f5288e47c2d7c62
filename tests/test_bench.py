"""sbrun-bench end to end on a tiny CPU config (both data paths), its costs.json feeding a `work`
budget, and scripts/gpu_check.sh on a machine without a GPU."""
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
import torch

from conftest import REPO, TINY, run_sbrun
from sbrun.bench.cli import main as bench_main
from sbrun.bench.epochs import VARIANTS as BENCH_VARIANTS
from sbrun.bench.references import sync_share
from sbrun.bench.rounds import SCORING
from sbrun.budget import Costs, read_costs
from sbrun.config import BudgetConfig
from sbrun.samplers.rules import cost_model_speedup

SMOKE = ["--preset", "smoke", "--repeats", "1", "--cost-reps", "2", "--loader-workers", "0"]
VARIANTS = [name for name, _, _ in BENCH_VARIANTS]


@pytest.fixture(scope="module", params=["tensor", "loader"])
def bench_out(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bench_{request.param}")
    # the loader path measures one scoring option only, to keep the suite fast
    scoring = ["--scoring", "all"] if request.param == "tensor" else ["--scoring", "fp32"]
    threads = torch.get_num_threads()
    # One thread: where the 2 cores are shared, two spinning OpenMP threads made this run 20x
    # slower (measured 255 s against 14 s); the smoke numbers mean nothing either way.
    torch.set_num_threads(1)
    try:
        bench_main([*SMOKE, *scoring, "--out", str(out), f"data_path={request.param}", "num_workers=0"])
    finally:
        torch.set_num_threads(threads)
    return request.param, out


@pytest.mark.slow
def test_bench_tables_are_complete_and_consistent(bench_out):
    path, out = bench_out
    df = pd.read_csv(out / "bench.csv").set_index("variant")
    assert list(df.index) == VARIANTS + ["plain loop", "dataloader loop"]   # no sync row on a CPU
    assert (df["epoch_s_median"] > 0).all() and df["speedup"].map(math.isfinite).all()
    assert df["images_per_s"].to_numpy() == pytest.approx(512 / df["epoch_s_median"].to_numpy())
    sel = df.loc[VARIANTS]
    assert sel["backprop_frac"]["traditional"] == 1.0
    # SB keeps 1/(1+beta) of stationary losses; one epoch of 512 examples has a binomial sd of
    # 0.02, and losses that still fall after priming bias it a little: 0.1 is about 5 sd.
    for name, beta in [("sb beta=1", 1), ("sb beta=2", 2), ("sb beta=3", 3), ("stale_sb n=2", 2), ("stale_sb n=3", 2)]:
        assert abs(sel["backprop_frac"][name] - 1 / (1 + beta)) <= 0.1, name
    # the cost model, recomputed by hand from the table's own costs and fractions
    f_sel, fb = df["f_sel_us"].iloc[0], df["fb_us"].iloc[0]
    assert f_sel > 0 and fb > 0
    for name in VARIANTS[1:]:
        n = int(name[-1]) if name.startswith("stale") else 1
        want = fb / (f_sel / n + sel["backprop_frac"][name] * fb)
        assert sel["predicted_speedup"][name] == pytest.approx(want)
        assert sel["efficiency"][name] == pytest.approx(sel["speedup"][name] / want)
    assert sel["bookkeeping_share"].between(0, 1).all()
    text = (out / "bench.md").read_text()
    assert all(f"| {name} |" in text for name in VARIANTS) and "Scoring options" in text
    assert f"data path {path}" in text


@pytest.mark.slow
def test_costs_json_records_the_measurement_and_budget_reads_it(bench_out):
    path, out = bench_out
    costs = json.loads((out / "costs.json").read_text())
    df = pd.read_csv(out / "bench.csv")
    assert costs["f_sel"] == pytest.approx(df["f_sel_us"].iloc[0] / 1e6)
    assert costs["fb"] == pytest.approx(df["fb_us"].iloc[0] / 1e6)
    assert costs["f_sel"] > 0 and costs["fb"] > 0
    assert (costs["device"], costs["preset"], costs["model"], costs["torch"], costs["data_path"]) == (
        "cpu", "smoke", "cnn", torch.__version__, path)
    assert read_costs(BudgetConfig(unit="work", amount=1.0, costs=str(out / "costs.json"))) == Costs(
        costs["f_sel"], costs["fb"])


@pytest.mark.slow
def test_scoring_options_have_their_costs_and_bounds(bench_out):
    path, out = bench_out
    table = pd.read_csv(out / "scoring.csv").set_index("option")
    wanted = list(SCORING) if path == "tensor" else ["fp32"]
    assert list(table.index) == wanted
    setting = {"fp32": (1.0, "fp32"), "scale": (0.5, "fp32"), "bf16": (1.0, "bf16"), "scale_bf16": (0.5, "bf16")}
    fracs = pd.read_csv(out / "bench.csv").set_index("variant")["backprop_frac"]
    for name, row in table.iterrows():
        assert (row["scale"], row["scoring_precision"]) == setting[name]
        assert row["f_sel_us"] > 0
        f_sel, fb = row["f_sel_us"] / 1e6, row["fb_us"] / 1e6
        assert row["bound_sb2"] == pytest.approx(cost_model_speedup(f_sel, fb, fracs["sb beta=2"], 1))
        assert row["bound_stale3"] == pytest.approx(cost_model_speedup(f_sel, fb, fracs["stale_sb n=3"], 3))
        per_option = json.loads((out / f"costs_{name}.json").read_text())
        assert per_option["f_sel"] == pytest.approx(f_sel) and per_option["fb"] == pytest.approx(fb)
        assert per_option["scoring"] == {"scale": setting[name][0], "precision": setting[name][1]}


@pytest.mark.slow
def test_costs_json_feeds_a_work_budget(bench_out, tmp_path):
    _, out = bench_out
    costs = json.loads((out / "costs.json").read_text())
    res = run_sbrun(*TINY, "sampler=sb", "budget.unit=work", "budget.amount=2",
                    f"budget.costs={out / 'costs.json'}", f"out_dir={tmp_path}", "name=w")
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "runs" / "w" / "summary.json").read_text())
    n, f_sel, fb = 512, costs["f_sel"], costs["fb"]
    # work in Traditional-epoch equivalents, by hand, from the measured costs
    by_hand = (s["total_select_forwards"] * f_sel + s["total_backprops"] * fb) / (n * fb)
    assert s["total_work"] == pytest.approx(by_hand, rel=1e-9)
    assert s["stop_reason"] == "budget"
    # the budget is met to within one step (32 backprops) plus one scoring chunk (32 forwards)
    assert 2.0 <= s["total_work"] <= 2.0 + (32 * fb + 32 * f_sel) / (n * fb) + 1e-9


def test_bad_bench_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    for args in (["--scoring", "fp32,fast"], ["beta=-1"], ["--repeats", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench_main(["--preset", "smoke", "--out", str(out), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("sbrun-bench: error:") and "allowed" in err[-1], err
        assert not out.exists()


def test_gpu_check_needs_its_output_folder():
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the full GPU check (minutes)")
def test_gpu_check_runs_its_cpu_parts_without_a_gpu(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}   # see bench_out
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    envtxt = (out / "env.txt").read_text()
    assert f"torch: {torch.__version__}" in envtxt and "CUDA available: False" in envtxt
    assert "nvidia-smi" in envtxt
    suite = ET.parse(out / "pytest-gpu.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
    assert tests >= 6 and skipped == tests and int(suite.get("failures")) == int(suite.get("errors")) == 0
    summary = (out / "summary.txt").read_text()
    for step in ("bench", "torchrun", "nccl"):
        assert any(line.startswith(step) and "SKIPPED: no CUDA GPU" in line for line in summary.splitlines()), step
    for step in ("env", "pytest", "bench-cpu"):
        assert any(line.startswith(step) and " ok " in line for line in summary.splitlines()), step
    assert f"{tests} collected, 0 failed, 0 errors, {skipped} skipped" in summary
    smoke = pd.read_csv(out / "bench-smoke" / "bench.csv")
    assert set(VARIANTS) <= set(smoke["variant"]) and (smoke["epoch_s_median"] > 0).all()
    assert json.loads((out / "bench-smoke" / "costs.json").read_text())["fb"] > 0


def test_the_sync_share_is_syncs_times_the_price_of_one():
    # 100 syncs per SB epoch of 2 s; the plain loop's 50 steps take 1.5 s instead of 1.0 s when it
    # syncs after each: 10 ms per sync, so 100 x 10 ms = 1 s = half the epoch.
    got = sync_share(100, [1.0, 1.2, 0.9], [1.4, 1.5, 1.6], 50, 2.0)
    assert got["sync_cost_us"] == pytest.approx(10_000) and got["sync_share"] == pytest.approx(0.5)
    assert sync_share(None, [1.0], [], 50, 2.0) == {}          # a CPU: nothing to price
    assert sync_share(100, [1.0], [0.9], 50, 2.0)["sync_share"] == 0.0   # noise never goes negative

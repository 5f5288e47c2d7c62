"""Multi-process runs (2 ranks, gloo on CPU) and local parallel sweeps."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, make_config, run_sbrun
from sbrun.build import load_data
from sbrun.runner import train

HARNESS = Path(__file__).with_name("ddp_harness.py")
# A linear model (no batch norm, no dropout) and no augmentation: every gradient is exact.
DDP_RUN = [o for o in TINY if not o.startswith("model")] + [
    "model=linear", "epochs=4", "label_noise=0.1", "sampler.staleness=2", "batch_size=32",
    "select_batch_size=64", "dataset.n_train=500", "sampler.epoch_end=flush"]   # priming backprops all 500


def torchrun(*args, nproc=2, timeout=240):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module", params=["stale_sb", "sb"])
def ddp_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"ddp_{request.param}")
    args = DDP_RUN + [f"sampler={request.param}", f"out_dir={tmp}", "name=ddp"]
    res = torchrun(HARNESS, tmp / "record", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    records = [torch.load(tmp / "record" / f"rank{r}.pt") for r in range(2)]
    return request.param, tmp / "runs" / "ddp", records, args


def test_two_rank_run_finishes_with_one_set_of_outputs(ddp_run):
    _, run, records, _ = ddp_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2
    df = pd.read_csv(run / "metrics.csv")
    assert list(df["epoch"]) == [1, 2, 3, 4]
    counts = pd.read_csv(run / "selection_counts.csv")
    assert len(counts) == 500
    # The counts describe the whole run: every backprop of both ranks.
    assert counts["backprops"].sum() == df["backprops"].iloc[-1]
    assert sum(len(r["idx"]) for rank in records for r in rank) == df["backprops"].iloc[-1]


def test_parameters_stay_identical_across_ranks_after_every_step(ddp_run):
    _, _, (r0, r1), _ = ddp_run
    assert len(r0) == len(r1) > 20
    for a, b in zip(r0, r1):
        assert torch.equal(a["after"], b["after"])
        assert a["total"] == b["total"]


def test_every_global_step_is_the_mean_gradient_over_its_examples(ddp_run):
    """Recompute each step's gradient in one process, from the parameters before the step and
    the union of the examples both ranks held: it must equal DDP's averaged gradient."""
    _, _, (r0, r1), args = ddp_run
    cfg = make_config(args)
    data = load_data(cfg, torch.device("cpu"))
    labels = data.train.labels                      # the noisy labels the run trained on
    mean = torch.tensor(data.spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.spec.std).view(1, -1, 1, 1)
    x_all = ((data.train.images.float() / 255 - mean) / std).flatten(1)
    k, d = data.spec.num_classes, x_all.shape[1]
    uneven = 0
    for a, b in zip(r0, r1):
        idx = torch.cat([a["idx"], b["idx"]])
        assert idx.numel() == a["total"]
        uneven += a["idx"].numel() != b["idx"].numel()
        w = a["before"][: k * d].view(k, d).clone().requires_grad_(True)
        bias = a["before"][k * d:].clone().requires_grad_(True)
        F.cross_entropy(x_all[idx] @ w.T + bias, labels[idx]).backward()
        expected = torch.cat([w.grad.flatten(), bias.grad])
        assert torch.allclose(a["grad"], expected, atol=1e-6, rtol=1e-4)
        assert torch.equal(a["grad"], b["grad"])
    assert uneven > 0          # the ranks really did hold unequal shares of some steps


def test_backprop_fraction_matches_the_single_process_run(ddp_run, tmp_path):
    sampler, run, _, args = ddp_run
    single = train(make_config([a for a in args if not a.startswith(("out_dir", "name"))]), tmp_path / "one")
    assert single["status"] == "finished"
    ddp = pd.read_csv(run / "metrics.csv")
    one = pd.read_csv(tmp_path / "one" / "metrics.csv")
    assert ddp["backprop_frac"].iloc[0] == one["backprop_frac"].iloc[0] == 1.0
    # Same rule, same global window, different Bernoulli streams: the fractions agree to within
    # sampling noise (~0.02 per epoch at 500 examples).
    assert abs(ddp["backprop_frac"].iloc[1:].mean() - one["backprop_frac"].iloc[1:].mean()) < 0.06
    assert ddp["select_forwards"].iloc[-1] == one["select_forwards"].iloc[-1]


def test_resume_refuses_another_world_size(ddp_run, tmp_path):
    _, run, _, _ = ddp_run
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "stopped"
    (run / "summary.json").write_text(json.dumps(summary))
    res = run_sbrun(f"resume={run}")
    assert res.returncode == 2
    assert "world size 1" in res.stderr and "(2)" in res.stderr


def test_local_parallel_sweep_completes_and_merges(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    res = run_sbrun("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", *TINY,
                    "sampler=traditional,sb", f"out_dir={tmp_path}", "name=par")
    assert res.returncode == 0, res.stderr
    runs = pd.read_csv(tmp_path / "multirun" / "par" / "runs.csv")
    assert sorted(runs["sampler"].unique()) == ["sb", "traditional"] and len(runs) == 6


@pytest.mark.slow
def test_pruning_samplers_keep_both_ranks_in_lockstep(tmp_path):
    """InfoBatch and KAKURENBO gather every rank's observations, and KAKURENBO re-scores its hidden
    examples at each epoch's end in parts of select_batch_size: with small parts the ranks hold
    different numbers of them, and must still pair every collective (this hung before)."""
    args = [o for o in TINY if not o.startswith("model")] + ["model=linear", "epochs=3", "batch_size=32",
                                                           "select_batch_size=8", "sampler.prime_epochs=0"]
    for sampler in ("kakurenbo", "infobatch"):
        res = torchrun("-m", "sbrun", *args, f"sampler={sampler}", f"out_dir={tmp_path}", f"name={sampler}",
                       timeout=180)
        if res.returncode != 0 and "exitcode: -6" in res.stderr:
            # A rank aborting (SIGABRT) after its last epoch was seen in about 1 of 6 runs on a 2-core
            # VM (a gloo teardown race, not yet understood; noted on issue 21). A hang or a mismatch,
            # what this test is for, fails either way; one fresh retry keeps the flake out of CI.
            shutil.rmtree(tmp_path / "runs" / sampler, ignore_errors=True)
            res = torchrun("-m", "sbrun", *args, f"sampler={sampler}", f"out_dir={tmp_path}", f"name={sampler}",
                           timeout=180)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        df = pd.read_csv(tmp_path / "runs" / sampler / "metrics.csv")
        assert list(df["epoch"]) == [1, 2, 3] and df["backprop_frac"].iloc[1:].min() < 1.0   # InfoBatch: epoch 2 only

"""Multi-process runs (2 ranks, gloo on CPU) and local parallel sweeps."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, assert_same_run, make_config, run_sbrun
from sbrun import distributed
from sbrun.build import load_data
from sbrun.cli import job_ranks
from sbrun.compose import config_dir
from sbrun.config import ConfigError
from sbrun.data import DataError
from sbrun.runner import check_shared, train

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


def test_closing_the_group_stops_its_threads(ddp_run):
    """A gloo worker thread still alive when Python shuts down can need the GIL to free a tensor and
    abort its rank (SIGABRT after the last epoch): closing the group must have joined them all."""
    _, run, _, _ = ddp_run
    for r in range(2):
        threads = json.loads((run.parents[1] / "record" / f"rank{r}.json").read_text())["threads"]
        if threads is None:
            pytest.skip("thread names need Linux's /proc")
        assert "python" in threads and not [t for t in threads if "gloo" in t], threads


def test_parameters_stay_identical_across_ranks_after_every_step(ddp_run):
    _, _, (r0, r1), _ = ddp_run
    assert len(r0) == len(r1) > 20
    for a, b in zip(r0, r1):
        assert torch.equal(a["after"], b["after"])
        assert a["total"] == b["total"]


def test_every_global_step_is_the_mean_gradient_over_its_examples(ddp_run):
    _, _, (r0, r1), args = ddp_run
    assert mean_gradient_steps(r0, r1, args) > 0   # the ranks really did hold unequal shares of some steps


def mean_gradient_steps(r0, r1, args) -> int:
    """Recompute each step's gradient in one process, from the parameters before the step and
    the union of the examples both ranks held: it must equal DDP's averaged gradient. Returns how
    many steps the ranks held unequal shares of."""
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
    return uneven


def test_backprop_fraction_matches_the_single_process_run(ddp_run, tmp_path):
    _, run, _, args = ddp_run
    assert_like_single_process(run, args, tmp_path)


def assert_like_single_process(run, args, tmp_path):
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_nodes(*args, timeout=300):
    """Two torchrun agents ("nodes" of one process each) that meet through the c10d rendezvous on
    localhost, as two machines would through HOST:PORT."""
    port, env = free_port(), {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                                f"--node-rank={k}", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
                                f"--rdzv-id=sbrun-test-{port}", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in (0, 1)]
    try:
        outs = [a.communicate(timeout=timeout) for a in agents]
    finally:
        for a in agents:
            a.kill()
    return [(a.returncode, out + err) for a, (out, err) in zip(agents, outs)]


@pytest.mark.slow
@pytest.mark.parametrize("ddp_run", ["sb"], indirect=True)
def test_two_nodes_train_exactly_the_one_node_run(ddp_run, tmp_path):
    """2 nodes x 1 process is the same run as 1 node x 2 processes (the ranks, their shards and
    seeds do not depend on where a rank runs), step for step; each rank trains on its shard only."""
    _, one_node, one_node_records, args = ddp_run
    args = [a for a in args if not a.startswith(("out_dir", "name"))] + [f"out_dir={tmp_path}", "name=nodes"]
    for code, log in two_nodes(HARNESS, tmp_path / "record", *args):
        assert code == 0, log[-3000:]
    where = [json.loads((tmp_path / "record" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [w["RANK"] for w in where] == [0, 1] and all(w["WORLD_SIZE"] == 2 for w in where)
    assert [w["LOCAL_RANK"] for w in where] == [0, 0] and sorted(w["GROUP_RANK"] for w in where) == [0, 1]
    assert not [t for w in where for t in w["threads"] or () if "gloo" in t]
    records = [torch.load(tmp_path / "record" / f"rank{r}.pt") for r in range(2)]
    for rank, (mine, theirs) in enumerate(zip(records, one_node_records)):
        assert all((s["idx"] % 2 == rank).all() for s in mine)      # examples rank, rank+2, ... only
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert torch.equal(a["idx"], b["idx"]) and torch.equal(a["after"], b["after"])
    primed = [torch.cat([s["idx"] for s in rank if s["epoch"] == 0]) for rank in records]
    assert sorted(torch.cat(primed).tolist()) == list(range(500))   # the priming epoch: each example once
    assert mean_gradient_steps(*records, args) > 0
    run = tmp_path / "runs" / "nodes"
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert_same_run(run, one_node)
    assert_like_single_process(run, args, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("ddp_run", ["sb"], indirect=True)
def test_the_tasks_of_a_submitit_job_train_one_run(ddp_run, tmp_path):
    """hydra/launcher=slurm_ddp's path, on this machine: submitit's local executor starts one job of 2
    tasks, each task joins the group as one rank (export_submitit_env), and the job trains exactly the
    2-process torchrun run, with one run directory and one run.log."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _, one_node, _, args = ddp_run
    args = [a for a in args if not a.startswith(("out_dir", "name"))] + [f"out_dir={tmp_path}", "name=job"]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "sbrun", "-m", "hydra/launcher=submitit_local",
                          "hydra.launcher.tasks_per_node=2", *args], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (run,) = [s.parent for s in (tmp_path / "multirun" / "job").glob("*/summary.json")]
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert_same_run(run, one_node)
    log = (run / "run.log").read_text()
    assert log.count("epoch   4/4") == 1                  # rank 0's lines, once


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
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        df = pd.read_csv(tmp_path / "runs" / sampler / "metrics.csv")
        assert list(df["epoch"]) == [1, 2, 3] and df["backprop_frac"].iloc[1:].min() < 1.0   # InfoBatch: epoch 2 only


# --- SLURM tasks as ranks, without SLURM ------------------------------------------------------------

SLURM_TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "11", "SLURM_NTASKS": "16",
              "SLURM_LOCALID": "3", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_JOB_NODELIST": "gpu[007-008]", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def restored_environment():
    """export_submitit_env writes os.environ itself, and monkeypatch.delenv of an absent variable
    records nothing to restore: without this, a test's RANK/WORLD_SIZE would outlive it and every
    later in-process run would wait for a process group that never forms."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def exported(monkeypatch, **env):
    pytest.importorskip("submitit")
    for k in TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in {**SLURM_TASK, **env}.items():
        monkeypatch.setenv(k, v)
    distributed.export_submitit_env()
    return {k: os.environ[k] for k in TORCHRUN_VARS}


def test_a_slurm_task_gets_torchruns_variables(monkeypatch):
    mine = exported(monkeypatch)
    port = mine.pop("MASTER_PORT")
    assert mine == {"RANK": "11", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8",
                    "MASTER_ADDR": "gpu007"}                     # the job's first node hosts the rendezvous
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"   # the rank picks its GPU by LOCAL_RANK
    assert distributed.launched_by_torchrun() and distributed.local_rank() == 3
    # every task of the job derives the same port; another job another one; MASTER_PORT, if set, wins
    assert exported(monkeypatch, SLURM_PROCID="0", SLURM_LOCALID="0")["MASTER_PORT"] == port
    assert exported(monkeypatch, SLURM_JOB_ID="4243")["MASTER_PORT"] != port
    assert exported(monkeypatch, MASTER_PORT="29511")["MASTER_PORT"] == "29511"


def test_torchruns_variables_stand(monkeypatch):
    for k, v in {**SLURM_TASK, "WORLD_SIZE": "4", "RANK": "2"}.items():
        monkeypatch.setenv(k, v)
    distributed.export_submitit_env()                  # torchrun started inside a SLURM job: its ranks stand
    assert os.environ["RANK"] == "2" and os.environ["WORLD_SIZE"] == "4"


@pytest.mark.parametrize("launcher, ranks", [([], 1), (["hydra/launcher=slurm"], 1),
                                             (["hydra/launcher=slurm_ddp"], 16),
                                             (["hydra/launcher=slurm_ddp", "hydra.launcher.nodes=3",
                                               "hydra.launcher.gpus_per_node=4"], 12),
                                             (["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"],
                                              2)])
def test_only_a_multi_task_submitit_launcher_makes_ranks_of_its_tasks(launcher, ranks):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        hc = compose("config", overrides=launcher, return_hydra_config=True).hydra
    assert job_ranks(hc.launcher) == ranks


@pytest.mark.parametrize("visible, local, gpu", [(8, 5, 5), (1, 5, 0), (0, 2, 2)])
def test_a_rank_trains_on_its_nodes_gpu(monkeypatch, visible, local, gpu):
    monkeypatch.setenv("LOCAL_RANK", str(local))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert distributed.gpu_index() == gpu      # one visible GPU: the launcher gave this rank its own


class Scripted(distributed.Collective):
    """A rank of a 2-node group whose collectives answer from a script (what the other ranks said)."""

    def __init__(self, rank, said, log, objects=None):
        super().__init__(rank, 4)
        self.said, self.log, self.objects = list(said), log, objects

    def any(self, flag):
        self.log.append("sync")
        return bool(flag) or self.said.pop(0)

    def gather_objects(self, value):
        return self.objects


@pytest.mark.parametrize("rank, local, order", [(0, 0, ["load", "sync", "sync", "sync"]),
                                                (2, 0, ["sync", "load", "sync", "sync"]),
                                                (3, 1, ["sync", "sync", "load", "sync"])])
def test_data_is_loaded_by_rank_0_then_each_nodes_first_rank_then_the_rest(monkeypatch, rank, local, order):
    monkeypatch.setenv("LOCAL_RANK", str(local))
    log = []
    assert Scripted(rank, [False] * 3, log).in_turn(lambda: log.append("load") or "data") == "data"
    assert log == order


def test_a_rank_that_cannot_load_the_data_stops_every_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    log = []
    with pytest.raises(DataError, match="another rank could not load the data"):
        Scripted(1, [True], log).in_turn(lambda: log.append("load"))
    assert log == ["sync"]                              # rank 0 failed first: this rank never loads

    def missing():
        raise DataError("cifar10: files are missing")
    with pytest.raises(DataError, match="files are missing"):
        Scripted(0, [False] * 3, []).in_turn(missing)


def test_ranks_that_see_different_checkpoints_are_refused(tmp_path):
    check_shared(Scripted(0, [], [], objects=["ckpt_e2.pt"] * 4), tmp_path, tmp_path / "ckpt_e2.pt")
    with pytest.raises(ConfigError, match=r"rank 1: none.*allowed: an out_dir on a filesystem every node shares"):
        check_shared(Scripted(0, [], [], objects=["ckpt_e2.pt", None, "ckpt_e2.pt", None]), tmp_path,
                     tmp_path / "ckpt_e2.pt")

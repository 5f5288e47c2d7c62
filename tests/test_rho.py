"""RHO-LOSS: its rule against hand computations, the holdout split, the irreducible-loss phase
(outputs, cost, budgets) and exact resume in either phase."""
import json
import random

import pandas as pd
import pytest
import torch

from conftest import assert_same_run, run_killed, run_sbrun
from sbrun.config import ConfigError
from sbrun.samplers import Ctx, Need, SamplerEnv
from sbrun.samplers.rho import RhoConfig, holdout_mask, pool_keep, reducible_topk

CPU = torch.device("cpu")
# 800 digits (a holdout of 400, 400 for the main model), an MLP, and a short irreducible-loss
# phase: 2 epochs x 13 steps; then each main epoch scores pools of 320 and 80 and keeps 32 + 8.
DIGITS = ["dataset=digits", "dataset.subset=800", "model=mlp", "model.width=32", "batch_size=32", "epochs=3",
          "sampler=rho", "sampler.epochs=2", "plots=false", "progress=off", "label_noise=0.2",
          "sampler.epoch_end=flush"]     # each epoch: one step from the full pool and one from the last (40 examples)
N, HOLDOUT = 800, 400
PHASE1_STEPS, MAIN_STEPS_PER_EPOCH = 26, 2


def sampler(n_train=20, batch=2, **kw):
    return RhoConfig(**kw).make(SamplerEnv(n_train=n_train, batch_size=batch, device=CPU))


def ctx(idx, epoch=0):
    return Ctx(epoch=epoch, batch=0, progress=0.0, generator=torch.Generator().manual_seed(0), idx=idx)


# --- the rule ------------------------------------------------------------------------------------

def test_reducible_topk_keeps_the_largest_loss_minus_irreducible_loss():
    losses = torch.tensor([2.0, 1.0, 3.0, 0.5, 2.5])
    irreducible = torch.tensor([1.9, 0.1, 1.0, 0.0, 2.4])
    # reducible: [0.1, 0.9, 2.0, 0.5, 0.1] -> the top 2 are positions 2 and 1, the top 3 adds 3
    assert sorted(reducible_topk(losses, irreducible, 2).tolist()) == [1, 2]
    assert sorted(reducible_topk(losses, irreducible, 3).tolist()) == [1, 2, 3]
    # the plain loss would have kept 2 and 4: the irreducible loss is what changes the choice
    assert sorted(reducible_topk(losses, torch.zeros(5), 2).tolist()) == [2, 4]


@pytest.mark.parametrize("n,expected", [(320, 32), (319, 31), (100, 10), (9, 1), (1, 1), (0, 0)])
def test_pool_keep_is_the_batch_from_a_full_pool_and_the_same_share_rounded_down_otherwise(n, expected):
    assert pool_keep(n, 32, 320) == expected


def test_sampler_scores_pools_of_pool_factor_batches_and_reads_the_chunks_own_irreducible_losses():
    s = sampler(n_train=20, batch=2, pool_factor=3)
    assert s.chunk_size(999) == 6                    # pool = pool_factor * batch, whatever select_size
    assert s.need(ctx(torch.arange(6))) is Need.FRESH
    s.irreducible = torch.arange(20, dtype=torch.float32) / 10       # example i: 0.1 * i
    idx = torch.tensor([4, 17, 9, 0, 12, 3])
    losses = torch.tensor([1.0, 2.5, 1.0, 0.2, 1.5, 0.6])
    # reducible: [0.6, 0.8, 0.1, 0.2, 0.3, 0.3]; the plain loss would keep positions 1 and 4
    assert sorted(s.select(losses, ctx(idx)).pos.tolist()) == [0, 1]
    # a last, smaller pool keeps the same share (at least one); an empty one (DDP padding) nothing
    assert s.select(losses[:4], ctx(idx[:4])).pos.tolist() == [1]
    assert s.select(torch.empty(0), ctx(torch.empty(0, dtype=torch.long))).pos.numel() == 0


def test_priming_epochs_backprop_the_whole_pool_without_scoring():
    s = sampler(prime_epochs=1)
    assert s.need(ctx(torch.arange(6), epoch=0)) is Need.NONE
    assert s.select(None, ctx(torch.arange(6), epoch=0)).pos is None
    assert s.need(ctx(torch.arange(6), epoch=1)) is Need.FRESH


def test_config_checks_and_description():
    assert RhoConfig().describe() == {"beta": None, "staleness": None, "selectivity": 0.1}
    assert RhoConfig(pool_factor=4).describe()["selectivity"] == 0.25
    for bad, key in [({"holdout": 0.0}, "sampler.holdout"), ({"holdout": 1.0}, "sampler.holdout"),
                     ({"pool_factor": 0}, "sampler.pool_factor"), ({"epochs": 0}, "sampler.epochs"),
                     ({"model": {"_target_": "sbrun.models.mlp", "bogus": 1}}, "sampler.model.bogus"),
                     ({"model": {"width": 3}}, "sampler.model._target_")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            RhoConfig(**bad)
    assert RhoConfig(model={"_target_": "sbrun.models.mlp", "width": 8}).model_spec().kwargs == {"width": 8}


# --- the holdout ---------------------------------------------------------------------------------

def test_holdout_is_seeded_sized_and_the_complement_of_what_the_loop_visits():
    a, b = holdout_mask(1000, 0.5, seed=3), holdout_mask(1000, 0.5, seed=3)
    assert torch.equal(a, b) and int(a.sum()) == 500
    assert not torch.equal(a, holdout_mask(1000, 0.5, seed=4))      # another seed, another split
    assert int(holdout_mask(7, 0.3, seed=0).sum()) == 2              # round(0.3 * 7)
    s = sampler(n_train=1000, holdout=0.5)
    visit = s.visit(0, 0.0, torch.Generator())
    assert torch.equal(visit, ~s.holdout) and torch.equal(s.visit(5, 0.9, torch.Generator()), visit)
    with pytest.raises(ConfigError, match="sampler.holdout"):
        holdout_mask(3, 0.1, seed=0)                                  # round(0.3) = 0 examples


# --- end to end ----------------------------------------------------------------------------------

def only_run(out):
    (run,) = list((out / "runs").iterdir())
    return run


def phase_work(run):
    """Phase 1's work in Traditional-epoch equivalents at the paper's costs (select 1, train 3):
    the irreducible-loss model's backprops plus one scoring forward per non-holdout example."""
    sub = json.loads((run / "irreducible" / "summary.json").read_text())
    return (sub["total_backprops"] * 3 + (N - HOLDOUT) * 1) / (N * 3)


@pytest.mark.slow
def test_end_to_end_on_digits_records_the_phase_and_never_visits_the_holdout(tmp_path):
    res = run_sbrun(*DIGITS, f"out_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"]["sampler"] == "rho"
    assert summary["params"]["selection_forward"] == "train"          # rho.yaml's default
    # the nested run: its own metrics, summary and checkpoint, 2 epochs on the holdout
    sub = json.loads((run / "irreducible" / "summary.json").read_text())
    sub_rows = pd.read_csv(run / "irreducible" / "metrics.csv")
    assert sub["status"] == "finished" and sub["n_train"] == HOLDOUT and list(sub_rows["epoch"]) == [1, 2]
    assert (sub_rows["backprop_frac"] == 1.0).all() and sub["total_backprops"] == 2 * HOLDOUT
    assert (run / "irreducible" / "ckpt").is_dir()
    # the phase's cost in summary.json and in the main run's work column
    assert summary["prepare_holdout"] == HOLDOUT
    assert summary["prepare_extra_work"] == pytest.approx(phase_work(run), rel=1e-12)
    assert summary["prepare_extra_time_s"] >= sub["train_time_s"] > 0
    rows = pd.read_csv(run / "metrics.csv")
    loop_work = (rows["select_forwards"] * 1 + rows["backprops"] * 3) / (N * 3)
    assert (rows["work"] - loop_work).tolist() == pytest.approx([phase_work(run)] * 3, rel=1e-9)
    # the cache: the recorded holdout is the seeded split; irreducible losses exactly off it
    cache = torch.load(run / "irreducible" / "losses.pt", weights_only=True)
    holdout = holdout_mask(N, 0.5, seed=0)
    assert torch.equal(cache["holdout"], holdout.nonzero().squeeze(1))
    assert torch.isnan(cache["losses"][holdout]).all() and torch.isfinite(cache["losses"][~holdout]).all()
    # the main model never scores or backpropagates a holdout example, and keeps a tenth of each pool
    assert rows["select_forwards"].diff().fillna(rows["select_forwards"]).tolist() == [N - HOLDOUT] * 3
    counts = pd.read_csv(run / "selection_counts.csv")
    assert counts.loc[holdout.numpy(), "backprops"].sum() == 0
    assert rows["backprops"].iloc[-1] == 3 * (32 + pool_keep(N - HOLDOUT - 320, 32, 320)) == 3 * 40


@pytest.mark.slow
def test_a_work_budget_counts_the_irreducible_phase(tmp_path):
    # Phase 1 costs 2 * 0.5 + 1/6 = 1.1667 work units; the main loop (0.22 a epoch) gets what is left.
    amount = 1.5
    res = run_sbrun(*DIGITS, "budget.unit=work", f"budget.amount={amount}", f"out_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "budget"
    rows = pd.read_csv(run / "metrics.csv")
    loop_work = (rows["select_forwards"].iloc[-1] + rows["backprops"].iloc[-1] * 3) / (N * 3)
    assert summary["total_work"] == pytest.approx(phase_work(run) + loop_work, rel=1e-9)
    # the run stops at the budget, at most one pool's scoring forwards and one step past it
    overshoot = (320 * 1 + 32 * 3) / (N * 3)
    assert amount <= summary["total_work"] <= amount + overshoot


# --- exact resume ---------------------------------------------------------------------------------

RESUME = DIGITS + ["deterministic=true"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("ref")
    res = run_sbrun(*RESUME, f"out_dir={base}", "name=ref")
    assert res.returncode == 0, res.stderr
    return base / "runs" / "ref"


def assert_same_rho_run(a, b):
    assert_same_run(a, b)
    assert_same_run(a / "irreducible", b / "irreducible")
    ca, cb = (torch.load(r / "irreducible" / "losses.pt", weights_only=True) for r in (a, b))
    assert torch.equal(ca["losses"].nan_to_num(-1), cb["losses"].nan_to_num(-1))
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["prepare_extra_work"] == sb["prepare_extra_work"]


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("SIGKILL", -9), ("SIGTERM", 3)])
def test_a_stop_during_the_irreducible_phase_resumes_it_exactly(tmp_path, uninterrupted, sig, code):
    # inside phase 1's second epoch (its first is checkpointed)
    after = random.Random(sig).randint(PHASE1_STEPS // 2 + 2, PHASE1_STEPS - 3)
    args = [*RESUME, f"out_dir={tmp_path}", "name=job"]
    stopped = run_killed(tmp_path, after, sig, *args)
    assert stopped.returncode == code, stopped.stderr
    run = tmp_path / "runs" / "job"
    assert (run / "irreducible" / "ckpt").is_dir() and not (run / "irreducible" / "losses.pt").exists()
    if sig == "SIGTERM":
        assert "irreducible-loss model" in stopped.stderr + stopped.stdout
    again = run_sbrun(*args)                      # the same command (stable name) continues it
    assert again.returncode == 0, again.stderr
    assert "resuming the irreducible-loss model" in again.stdout
    assert_same_rho_run(run, uninterrupted)


@pytest.mark.slow
def test_sigkill_in_the_main_phase_resumes_exactly_without_retraining_the_irreducible_model(tmp_path,
                                                                                          uninterrupted):
    after = PHASE1_STEPS + MAIN_STEPS_PER_EPOCH + 2                     # main epoch 2, after its checkpoint
    stopped = run_killed(tmp_path, after, "SIGKILL", *RESUME, f"out_dir={tmp_path}", "name=job")
    assert stopped.returncode == -9
    run = tmp_path / "runs" / "job"
    cache = run / "irreducible" / "losses.pt"
    mtime = cache.stat().st_mtime_ns
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "phase 1:" not in resumed.stdout
    assert cache.stat().st_mtime_ns == mtime                         # read, not recomputed
    assert_same_rho_run(run, uninterrupted)


@pytest.mark.slow
def test_a_work_budget_the_phase_uses_up_says_so_and_trains_nothing(tmp_path):
    res = run_sbrun(*DIGITS, "budget.unit=work", "budget.amount=1.0", f"out_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    assert "the main model will not train" in res.stdout + res.stderr
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["epochs_completed"] == 0 and summary["prepare_extra_work"] > 1.0

"""Compute budgets: every unit ends the run at its budget, with a fully decayed schedule, and a
resume in the middle of a budget-cut epoch continues exactly."""
import json
import math

import pandas as pd
import pytest

from conftest import TINY, comparable, run_killed, run_sbrun
from sbrun.budget import Costs, Meter, Usage
from sbrun.config import BudgetConfig, ScheduleConfig
from sbrun.schedule import relative_lr

N, BATCH = 512, 32


# --- pure functions -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,frac,want", [
    ("linear", 0.0, 1.0), ("linear", 0.5, 0.55), ("linear", 1.0, 0.1),
    ("cosine", 0.0, 1.0), ("cosine", 0.5, 0.55), ("cosine", 1.0, 0.1),
    ("step", 0.49, 1.0), ("step", 0.5, math.sqrt(0.1)), ("step", 0.75, 0.1), ("step", 1.0, 0.1),
])
def test_relative_schedules_against_hand_values(name, frac, want):
    # final_lr_frac 0.1; step: gamma null -> 0.1 ** (1/2) at each of the milestones 0.5, 0.75
    cfg = ScheduleConfig(name=name, milestones=[0.5, 0.75] if name == "step" else [], gamma=None if name == "step"
                         else 0.1, final_lr_frac=0.1)
    assert relative_lr(frac, 1.0, cfg) == pytest.approx(want)


def test_work_counts_forwards_and_backprops_in_traditional_epochs():
    m = Meter("work", total=2.0, n_train=100, costs=Costs(select=1.0, train=3.0))
    # one Traditional epoch: 100 backprops, no scoring = 1.0; SB-like: 100 scored + 33 trained
    assert m.work(Usage(backprops=100)) == pytest.approx(1.0)
    assert m.work(Usage(select_forwards=100, backprops=33)) == pytest.approx((100 + 99) / 300)
    assert m.fraction(Usage(backprops=150)) == pytest.approx(0.75)
    assert not m.spent(Usage(backprops=199)) and m.spent(Usage(backprops=200))


def test_costs_come_from_a_bench_file(tmp_path):
    from sbrun.budget import read_costs

    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"f_sel": 2e-5, "fb": 8e-5}))
    assert read_costs(BudgetConfig(unit="work", amount=1, costs=str(path))) == Costs(2e-5, 8e-5)
    assert read_costs(BudgetConfig(unit="work", amount=1)) == Costs(1.0, 3.0)      # the paper's 1 : 3
    assert read_costs(BudgetConfig(unit="work", amount=1, cost_select=0.5, costs=str(path))).select == 0.5


def test_the_data_term_charges_every_example_read():
    """With d per example read, a Traditional epoch (N read, N trained) is still 1 work, and a
    stale epoch that reads only what it trains pays d only for those."""
    m = Meter("work", total=2.0, n_train=100, costs=Costs(select=1.0, train=3.0, data=2.0))
    assert m.work(Usage(backprops=100, loaded=100)) == pytest.approx(1.0)
    assert m.work(Usage(backprops=30, loaded=30)) == pytest.approx(30 * 5 / 500)
    assert m.work(Usage(select_forwards=100, backprops=33, loaded=100)) == pytest.approx((100 + 99 + 200) / 500)


def test_charge_data_reads_d_from_the_bench_file(tmp_path):
    from sbrun.budget import read_costs
    from sbrun.config import ConfigError

    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"f_sel": 2e-5, "fb": 8e-5, "d": 4e-5}))
    assert read_costs(BudgetConfig(unit="work", amount=1, costs=str(path))).data == 0.0       # not asked
    assert read_costs(BudgetConfig(unit="work", amount=1, costs=str(path), charge_data=True)).data == 4e-5
    # explicit cost_train rescales the file's d with it (the ratio d : f+b is what was measured)
    assert read_costs(BudgetConfig(unit="work", amount=1, costs=str(path), charge_data=True,
                                   cost_train=3.0)).data == pytest.approx(1.5)
    with pytest.raises(ConfigError, match="budget.charge_data"):
        BudgetConfig(unit="work", amount=1, charge_data=True)
    path.write_text(json.dumps({"f_sel": 2e-5, "fb": 8e-5}))     # written before d was measured
    with pytest.raises(ConfigError, match="with budget.charge_data=true"):
        read_costs(BudgetConfig(unit="work", amount=1, costs=str(path), charge_data=True))


# --- runs --------------------------------------------------------------------------------------------

def budget_run(tmp_path, *args, name="b"):
    res = run_sbrun(*TINY, f"out_dir={tmp_path}", f"name={name}", *args)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / name
    return run, pd.read_csv(run / "metrics.csv"), json.loads((run / "summary.json").read_text())


# The seconds case trains against a 0.6 s wall clock: slow on a loaded machine, so not in the quick loop.
@pytest.mark.parametrize("unit,amount", [("epochs", 2.5), ("backprops", 1.5), ("work", 1.5),
                                         pytest.param("seconds", 0.6, marks=pytest.mark.slow)])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "step"])
def test_the_last_step_runs_at_the_final_learning_rate(tmp_path, steps, unit, amount, schedule):
    final = 0.05
    # epochs and seconds can run out between steps (at a chunk boundary, or during scoring): then
    # only epoch_end=flush takes a last step at the final lr; the default (carry) leaves the queue
    flush = ["sampler.epoch_end=flush"] if unit in ("epochs", "seconds") else []
    run, df, summary = budget_run(tmp_path, "sampler=sb", f"schedule={schedule}", f"budget.unit={unit}",
                                  f"budget.amount={amount}", f"schedule.final_lr_frac={final}", "epochs=1", *flush,
                                  *steps.overrides)
    lr_log = steps.read("lr")
    assert summary["status"] == "finished" and summary["stop_reason"] == "budget"
    base = 0.05                                           # TINY's optim.lr
    assert lr_log[-1] == pytest.approx(final * base, rel=0.01)
    assert max(lr_log) <= base + 1e-12 and lr_log[0] > 0.5 * base      # it decayed from the top
    # seconds stop when the next step is predicted (from the last one's duration) to cross the budget
    assert df["budget_frac"].iloc[-1] >= (0.9 if unit == "seconds" else 1.0 - 1e-9)


@pytest.mark.parametrize("unit,amount", [("backprops", 1.7), ("work", 1.7)])
@pytest.mark.parametrize("sampler", ["traditional", "sb", "stale_sb"])
def test_work_and_backprop_budgets_are_honoured_within_one_batch(tmp_path, unit, amount, sampler):
    _, df, summary = budget_run(tmp_path, f"sampler={sampler}", f"budget.unit={unit}", f"budget.amount={amount}",
                                "schedule=linear")
    last = df.iloc[-1]
    used = last["backprops"] / N if unit == "backprops" else last["work"]
    assert used >= amount - 1e-9
    # one batch of training, plus (work) the scoring of one selection chunk, both in epoch units
    slack = BATCH / N + (BATCH * 1.0 / (N * 3.0) if unit == "work" else 0.0)
    assert used - amount <= slack + 1e-9, (used, amount)
    assert summary["total_work"] == pytest.approx(last["work"])


def test_equal_work_buys_more_epochs_for_a_cheaper_sampler(tmp_path):
    _, trad, _ = budget_run(tmp_path, "sampler=traditional", "budget.unit=work", "budget.amount=2", name="t")
    _, sb, _ = budget_run(tmp_path, "sampler=sb", "budget.unit=work", "budget.amount=2", name="s")
    assert trad["epoch"].iloc[-1] == 2
    # SB's epochs after priming cost about (1 + 3/3) / 3 of a Traditional one
    assert sb["epoch"].iloc[-1] >= 3 and sb["work"].iloc[-1] == pytest.approx(2.0, abs=BATCH / N + 0.05)


def test_a_budget_run_is_finished_and_a_larger_budget_extends_it(tmp_path):
    run, df, _ = budget_run(tmp_path, "sampler=sb", "budget.unit=work", "budget.amount=1.5", "schedule=linear")
    again = run_sbrun(*TINY, f"out_dir={tmp_path}", "name=b", "sampler=sb", "budget.unit=work",
                      "budget.amount=1.5", "schedule=linear")
    assert again.returncode == 0 and "skipping" in again.stdout and "already holds a finished run" in again.stdout
    assert pd.read_csv(run / "metrics.csv").equals(df)                   # nothing trained again
    more = run_sbrun(f"resume={run}", "budget.amount=2.5")
    assert more.returncode == 0, more.stderr
    longer = pd.read_csv(run / "metrics.csv")
    assert longer["work"].iloc[-1] >= 2.5 - 1e-9
    assert longer["epoch"].is_unique                                    # the cut epoch was completed, not doubled


def test_a_resume_inside_a_budget_cut_epoch_is_exact(tmp_path):
    args = [*TINY, "sampler=stale_sb", "sampler.staleness=2", "budget.unit=work", "budget.amount=2.3",
            "schedule=cosine", "deterministic=true", "label_noise=0.1"]
    ref = run_sbrun(*args, f"out_dir={tmp_path / 'ref'}", "name=r")
    assert ref.returncode == 0, ref.stderr
    steps = json.loads((tmp_path / "ref" / "runs" / "r" / "summary.json").read_text())["total_steps"]
    # two steps before the end: inside the epoch the budget cuts short
    killed = run_killed(tmp_path, steps - 2, "SIGKILL", *args, f"out_dir={tmp_path / 'cut'}", "name=r")
    assert killed.returncode == -9
    run = tmp_path / "cut" / "runs" / "r"
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(comparable(tmp_path / "ref" / "runs" / "r"), comparable(run))


def test_a_work_budget_with_a_data_term_runs_traditional_for_exactly_its_epochs(tmp_path):
    # with d charged, a Traditional epoch still costs 1 work: a budget of 2 is two epochs
    _, df, summary = budget_run(tmp_path, "sampler=traditional", "budget.unit=work", "budget.amount=2",
                                "budget.cost_select=1", "budget.cost_train=3", "budget.cost_data=1")
    assert df["epoch"].tolist() == [1, 2] and df["work"].iloc[-1] == pytest.approx(2.0)
    assert df["examples_loaded"].tolist() == [512, 512]

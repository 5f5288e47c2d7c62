"""sbrun-compare end to end on digits, and its verdict arithmetic on constructed runs."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from sbrun import verdict
from sbrun.compare import main, parse
from sbrun.config import ConfigError


def finals_frame(errors: dict, val: dict | None = None) -> pd.DataFrame:
    """errors[(sampler, lr, budget)] = per-seed test errors."""
    rows = []
    for (sampler, lr, budget), errs in errors.items():
        for seed, e in enumerate(errs):
            v = (val or {}).get((sampler, lr, budget), errs)[seed]
            rows.append({"run": f"{sampler}-{lr}-{budget}-{seed}", "sampler": sampler, "lr": lr,
                         "budget_amount": budget, "seed": seed, "status": "finished", "test_error": e,
                         "val_error": v, "work": budget})
    return pd.DataFrame(rows)


def test_lr_is_chosen_on_validation_never_on_test():
    # lr 0.1 is best on test but worst on validation: the choice must follow validation
    f = finals_frame({("sb", 0.01, 2.0): [0.10, 0.11], ("sb", 0.1, 2.0): [0.05, 0.05]},
                     val={("sb", 0.01, 2.0): [0.08, 0.09], ("sb", 0.1, 2.0): [0.20, 0.21]})
    choice = verdict.choose_lr(f, per_budget=False, seeds=[0, 1])
    assert choice["lr"].tolist() == [0.01]


def test_a_seed_that_diverged_counts_against_its_lr():
    # lr 0.1 has the better validation error on the seed that finished, but seed 1 left no row
    f = finals_frame({("sb", 0.01, 2.0): [0.10, 0.10], ("sb", 0.1, 2.0): [0.05, 0.05]})
    f = f[~((f["lr"] == 0.1) & (f["seed"] == 1))]
    choice = verdict.choose_lr(f, per_budget=False, seeds=[0, 1])
    assert choice["lr"].tolist() == [0.01]
    assert verdict.choose_lr(f, per_budget=False, seeds=[0])["lr"].tolist() == [0.1]


def test_paired_table_pairs_by_seed_and_states_power():
    # per-seed errors differ a lot between seeds but SB is 1 point better on every seed: paired,
    # that is a clear difference even though the unpaired intervals overlap
    base = [0.10, 0.20, 0.30, 0.15, 0.25]
    f = finals_frame({("traditional", 0.05, 4.0): base, ("sb", 0.05, 4.0): [b - 0.01 for b in base]})
    t = verdict.paired_table(f, "traditional")
    sb = t[t["sampler"] == "sb"].iloc[0]
    assert sb["diff_n"] == 5
    assert sb["diff_mean"] == pytest.approx(-0.01)
    assert sb["diff_ci_high"] < 0
    assert sb["error_ci_low"] >= 0 and sb["error_ci_high"] <= 1
    lines = verdict.verdict_lines(t, "traditional")
    assert "lower error" in lines[0]


def test_no_difference_is_said_with_the_detectable_effect():
    rng = np.random.default_rng(0)
    base = list(0.1 + 0.01 * rng.standard_normal(5))
    other = list(np.array(base) + 0.005 * rng.standard_normal(5))
    f = finals_frame({("traditional", 0.05, 4.0): base, ("rs2", 0.05, 4.0): other})
    t = verdict.paired_table(f, "traditional")
    r = t[t["sampler"] == "rs2"].iloc[0]
    assert r["diff_ci_low"] < 0 < r["diff_ci_high"]
    assert r["diff_detectable"] > 0
    (line,) = verdict.verdict_lines(t, "traditional")
    assert "no difference detected" in line and "at 80% power" in line


def test_smallest_budget_and_default_target():
    f = finals_frame({("traditional", 0.05, 2.0): [0.20, 0.22], ("traditional", 0.05, 8.0): [0.10, 0.10],
                      ("sb", 0.05, 2.0): [0.105, 0.105], ("sb", 0.05, 8.0): [0.09, 0.09]})
    t = verdict.paired_table(f, "traditional")
    target = verdict.default_target(t, "traditional")
    assert target == pytest.approx(0.11)
    reach = verdict.smallest_budget(t, target).set_index("sampler")["smallest_budget"]
    assert reach["sb"] == 2.0 and reach["traditional"] == 8.0


@pytest.mark.parametrize("argv, key", [
    (["x", "--methods", "sb", "--budgets", "1", "--lrs", "0.1"], "--methods"),
    (["x", "--methods", "sb", "traditional", "--budgets", "1", "--lrs", "0.1", "--seeds", "0"], "--seeds"),
    (["x", "--methods", "sb", "traditional", "--budgets", "1", "2", "--lrs", "0.1", "--tune-budget", "3"],
     "--tune-budget"),
    (["x", "--methods", "sb", "rs2", "--budgets", "1", "--lrs", "0.1"], "--baseline"),
    (["x", "--methods", "sb", "traditional", "--budgets", "1", "--lrs", "0.1", "--val-fraction", "0"],
     "--val-fraction"),
])
def test_bad_protocol_is_one_line(argv, key):
    with pytest.raises(ConfigError, match=key):
        parse(argv)


@pytest.mark.slow
def test_compare_end_to_end_on_digits(tmp_path, capsys):
    """2 methods x 2 budgets x 2 seeds x an lr grid of 2, lr chosen on validation; a re-run skips
    every job and writes the same verdict."""
    argv = ["e2e", "--methods", "traditional", "sb", "--budgets", "1", "2", "--seeds", "0", "1",
            "--lrs", "0.005", "0.05", "--tune-budget", "2", "--costs", "paper", "--bn-recalibrate", "256",
            "--out-dir", str(tmp_path), "dataset=digits", "model=mlp", "model.width=32", "batch_size=32"]
    main(argv)
    out = tmp_path / "compare" / "e2e"
    choice = pd.read_csv(out / "lr_choice.csv")
    runs = pd.read_csv(out / "finals.csv")
    tuning = pd.concat([pd.read_csv(p) for p in (tmp_path / "multirun" / "e2e").rglob("metrics.csv")])
    assert set(choice["sampler"]) == {"traditional", "sb"}
    assert set(choice["lr"]) <= {0.005, 0.05}
    # the choice is the lr with the lower mean validation error at the tuning budget
    finals = verdict.last_rows(pd.read_csv(tmp_path / "multirun" / "e2e" / "runs.csv"))
    for _, c in choice.iterrows():
        at = finals[(finals["sampler"] == c["sampler"]) & (finals["budget_amount"] == 2.0)]
        by_lr = at.groupby("lr")["val_error"].mean()
        assert by_lr.idxmin() == c["lr"] or by_lr.max() - by_lr.min() < 1e-12
    # every method at its chosen lr, at both budgets, both seeds
    assert len(runs) == 2 * 2 * 2
    table = pd.read_csv(out / "comparison.csv")
    sb = table[table["sampler"] == "sb"]
    assert (sb["diff_n"] == 2).all() and sb["diff_mean"].notna().all()
    assert (out / "pareto.png").stat().st_size > 0
    text = (out / "verdict.md").read_text()
    assert "Verdict" in text and "budget 2, sb vs traditional" in text
    assert len(tuning) > 0
    everything = pd.read_csv(out / "runs.csv")      # every evaluation, tuning runs included
    # tuning: 2 methods x 2 lrs x 2 seeds at budget 2; finals add budget 1
    assert everything["run"].nunique() == 2 * 2 * 2 + 2 * 2
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "multirun" / "e2e").rglob("summary.json")}
    main(argv)     # everything is finished: nothing re-runs
    assert mtimes == {p: p.stat().st_mtime for p in (tmp_path / "multirun" / "e2e").rglob("summary.json")}
    assert (out / "verdict.md").read_text() == text


def test_measured_costs_record_the_setup_they_were_measured_on():
    from sbrun.bench.probe import measure_costs
    from sbrun.budget import costs_mismatch
    costs = measure_costs(["dataset=digits", "model=mlp", "model.width=32"], reps=3)
    assert 0 < costs["f_sel"] < costs["fb"]      # a forward without gradients is cheaper than forward+backward
    assert costs["dataset"] == "digits" and costs["model"] == "mlp"
    assert costs_mismatch(costs, {"dataset": "mnist", "model": "mlp"}).startswith("dataset")


class FakeSweep:
    """subprocess.Popen for run_sweeps: records the command and the threads it was given."""
    started: list = []

    def __init__(self, cmd, env):
        self.cmd, self.threads = cmd, env.get("OMP_NUM_THREADS")
        FakeSweep.started.append(self)

    def wait(self):
        return self.code


@pytest.mark.parametrize("code, raised", [(2, ConfigError), (3, "stopped"), (-15, "stopped")])
def test_a_sweep_that_did_not_finish_stops_the_protocol(monkeypatch, code, raised):
    """Choosing an lr from a tuning sweep cut short by a signal would be wrong; a failed job
    (exit 1) is a result and the protocol goes on."""
    import subprocess

    from sbrun import compare
    monkeypatch.setattr(subprocess, "Popen", type("Ended", (FakeSweep,), {"code": code}))
    with pytest.raises(ConfigError if raised is ConfigError else compare.SweepStopped):
        compare.run_sweeps([["sampler=sb"], ["sampler=traditional"]], workers=2)
    monkeypatch.setattr(subprocess, "Popen", type("SomeFailed", (FakeSweep,), {"code": 1}))
    compare.run_sweeps([["sampler=sb"]])       # some jobs failed: no exception


def test_workers_split_the_methods_and_the_cores(monkeypatch):
    import subprocess

    from sbrun import compare
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    pr = compare.parse(["x", "--methods", "traditional", "sb", "stale_sb", "--budgets", "1", "2", "--lrs", "0.1",
                        "--workers", "2"])
    assert [j[0] for j in compare.tuning_jobs(pr)] == ["sampler=traditional,stale_sb", "sampler=sb"]
    FakeSweep.started = []
    monkeypatch.setattr(subprocess, "Popen", type("Done", (FakeSweep,), {"code": 0}))
    compare.run_sweeps(compare.tuning_jobs(pr), pr.workers)
    assert [s.threads for s in FakeSweep.started] == ["4", "4"]
    assert all("--multirun" in s.cmd for s in FakeSweep.started)


def test_a_proxy_method_gets_its_measured_costs_added_to_the_costs_file(tmp_path):
    """sampler=sb_proxy's proxy is timed once and recorded beside the file's own f_sel and fb;
    a second call finds it and measures nothing."""
    from sbrun import compare
    from sbrun.budget import measured_proxy
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"f_sel": 1e-4, "fb": 3e-4}))
    pr = compare.parse(["x", "--methods", "traditional", "sb_proxy", "--budgets", "1", "--lrs", "0.1", "--",
                        "dataset=digits", "model=cnn", "model.width=8"])
    compare.add_proxy_costs(pr, path)
    costs = json.loads(path.read_text())
    (entry,) = costs["proxies"]
    assert entry["proxy"] == {"width_factor": 0.25, "model": None}
    assert 0 < entry["proxy_f_sel"] and 0 < entry["proxy_fb"] and (costs["f_sel"], costs["fb"]) == (1e-4, 3e-4)
    sel, train = measured_proxy(costs, entry["proxy"])
    assert (sel, train) == (entry["proxy_f_sel"] / entry["f_sel"], entry["proxy_fb"] / entry["fb"])
    assert measured_proxy(costs, {"width_factor": 0.5, "model": None}) is None     # another proxy: not this one
    mtime = path.stat().st_mtime_ns
    compare.add_proxy_costs(pr, path)
    assert path.stat().st_mtime_ns == mtime


def test_only_jobs_with_the_protocols_settings_count():
    from sbrun.compare import same_settings
    base = ["name=x", "progress=off", "plots=false", "budget.costs=a.json", "dataset.subset=5000"]
    assert same_settings(base, ["name=x", "plots=False", "budget.costs=a.json", "dataset.subset=5000", "seed=1"])
    assert not same_settings(base, ["name=x", "budget.costs=b.json", "dataset.subset=5000"])   # other costs
    assert not same_settings(base, ["name=x", "budget.costs=a.json"])                           # other subset

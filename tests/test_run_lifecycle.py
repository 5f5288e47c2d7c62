"""A run's life cycle: when it counts as finished, resuming with the original command, exact
loader-path resume, named sweeps that grow, no leftovers from bad input, and one-line messages that
say what is allowed (first written for the promises a newcomer's trial found broken, issue 10)."""
import json

import pandas as pd
import pytest

from conftest import TINY, assert_same_run, run_killed, run_sbrun
from sbrun import records
from sbrun.runner import is_finished


def summary(run):
    return json.loads((run / "summary.json").read_text())


# --- 1. one definition of "finished" -----------------------------------------------------------

@pytest.mark.parametrize("reason,saved,now,finished", [
    ("epochs", {"epochs": 5}, {"epochs": 5}, True),
    ("epochs", {"epochs": 5}, {"epochs": 7}, False),           # more epochs extend it
    ("hours", {"epochs": 30, "hours": 1.0}, {"epochs": 30, "hours": 1.0}, True),   # the time cap ended it
    ("hours", {"epochs": 30, "hours": 1.0}, {"epochs": 31, "hours": 1.0}, True),   # epochs were not the limit
    ("hours", {"epochs": 30, "hours": 1.0}, {"epochs": 30, "hours": 2.0}, False),
    ("hours", {"epochs": 30, "hours": 1.0}, {"epochs": 30, "hours": None}, False),
    ("budget", {"budget": {"amount": 2.0}}, {"budget": {"amount": 2.0}}, True),
    ("budget", {"budget": {"amount": 2.0}}, {"budget": {"amount": 3.0}}, False),
])
def test_a_run_that_ended_on_its_limit_is_finished_until_that_limit_is_raised(reason, saved, now, finished):
    s = {"status": records.FINISHED, "stop_reason": reason, "config": saved}
    assert is_finished(s, now) is finished
    assert is_finished(s) is True
    assert not is_finished({**s, "status": records.STOPPED}, now)


def test_rerunning_a_named_command_skips_its_finished_run(tmp_path):
    args = [*TINY, "epochs=2", f"out_dir={tmp_path}", "name=r"]
    assert run_sbrun(*args).returncode == 0
    before = (tmp_path / "runs" / "r" / "metrics.csv").read_bytes()
    again = run_sbrun(*args)
    assert again.returncode == 0 and "already holds a finished run" in again.stdout
    assert (tmp_path / "runs" / "r" / "metrics.csv").read_bytes() == before


# --- 2. the shell history plus resume= ---------------------------------------------------------

def test_resume_accepts_the_original_command_and_names_a_real_change(tmp_path):
    args = [*TINY, "sampler=sb", "beta=2", "seed=3", f"out_dir={tmp_path}", "name=r"]
    assert run_sbrun(*args, "epochs=2").returncode == 0
    run = tmp_path / "runs" / "r"
    more = run_sbrun(*args, "epochs=3", f"resume={run}")         # every key restated, one setting raised
    assert more.returncode == 0, more.stderr
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2, 3]
    changed = run_sbrun(*args, "beta=3", "epochs=4", f"resume={run}")
    assert changed.returncode == 2
    line = changed.stderr.strip()
    assert "\n" not in line and "beta cannot change" in line and "beta=2.0" in line and "beta=3.0" in line


# --- 3. the loader path: per-example augmentation streams --------------------------------------

LOADER = [*TINY, "data_path=loader", "dataset.crop_padding=2", "dataset.flip=true", "dataset.cutout=3",
          "sampler=stale_sb", "sampler.staleness=2", "epochs=3", "deterministic=true"]


@pytest.mark.slow
def test_loader_path_results_do_not_depend_on_workers_and_resume_exactly(tmp_path):
    ref = run_sbrun(*LOADER, "num_workers=0", f"out_dir={tmp_path / 'a'}", "name=r")
    two = run_sbrun(*LOADER, "num_workers=2", f"out_dir={tmp_path / 'b'}", "name=r")
    assert ref.returncode == 0 and two.returncode == 0, ref.stderr + two.stderr
    a, b = tmp_path / "a" / "runs" / "r", tmp_path / "b" / "runs" / "r"
    assert_same_run(a, b)
    # SIGKILL mid-epoch 2 with no workers, resumed with two: still the uninterrupted run
    killed = run_killed(tmp_path, 22, "SIGKILL", *LOADER, "num_workers=0", f"out_dir={tmp_path / 'c'}", "name=r")
    assert killed.returncode == -9
    c = tmp_path / "c" / "runs" / "r"
    resumed = run_sbrun(f"resume={c}", "num_workers=2")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(a, c)


# --- 7. a named sweep that grows ---------------------------------------------------------------

def test_extending_a_named_sweep_runs_only_what_is_new(tmp_path):
    base = ["-m", *TINY, "epochs=1", f"out_dir={tmp_path}", "name=s"]
    assert run_sbrun(*base, "sampler=traditional,sb").returncode == 0
    sweep = tmp_path / "multirun" / "s"
    first = {p.name: (p / "metrics.csv").stat().st_mtime_ns for p in sweep.iterdir() if (p / "summary.json").exists()}
    grown = run_sbrun(*base, "sampler=random,sb,traditional")        # one more value, reordered
    assert grown.returncode == 0, grown.stderr
    jobs = {p.name for p in sweep.iterdir() if (p / "summary.json").exists()}
    assert len(jobs) == 3 and set(first) < jobs
    assert grown.stdout.count("skipping") == 2
    assert all((sweep / name / "metrics.csv").stat().st_mtime_ns == t for name, t in first.items())
    assert len(pd.read_csv(sweep / "runs.csv")) == 3


# --- 8. bad input leaves nothing behind --------------------------------------------------------

def test_a_failed_download_removes_the_folders_it_made(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.delenv("SBRUN_OFFLINE", raising=False)
    res = run_sbrun("dataset=mnist", f"data_dir={tmp_path / 'nope' / 'deeper'}", f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "download failed" in res.stderr
    assert not (tmp_path / "nope").exists() and not (tmp_path / "out").exists()


def test_a_too_small_time_cap_leaves_no_run_directory(tmp_path):
    res = run_sbrun(*TINY, "hours=1e-9", f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 2 and "hours" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_input_with_an_extra_config_dir_is_checked_before_anything_runs(tmp_path):
    extra = tmp_path / "myconf" / "sampler"
    extra.mkdir(parents=True)
    (extra / "mine.yaml").write_text("_target_: sbrun.samplers.sb.SBConfig\nname: mine\nbeta: ${beta}\n")
    bad = run_sbrun("--config-dir", str(tmp_path / "myconf"), *TINY, "sampler=mine", "beta=-1",
                    f"out_dir={tmp_path / 'out'}")
    assert bad.returncode == 2 and "beta" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    good = run_sbrun("--config-dir", str(tmp_path / "myconf"), *TINY, "sampler=mine", "epochs=1",
                     f"out_dir={tmp_path / 'out'}", "name=m")
    assert good.returncode == 0, good.stderr
    assert summary(tmp_path / "out" / "runs" / "m")["params"]["sampler"] == "mine"


def test_a_run_with_an_extra_config_dir_resumes_with_it(tmp_path):
    extra = tmp_path / "myconf" / "sampler"
    extra.mkdir(parents=True)
    (extra / "mine.yaml").write_text("_target_: sbrun.samplers.sb.SBConfig\nname: mine\nbeta: ${beta}\n")
    first = run_sbrun("--config-dir", str(tmp_path / "myconf"), *TINY, "sampler=mine", "epochs=1",
                      f"out_dir={tmp_path / 'out'}", "name=m")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "out" / "runs" / "m"
    # the resumed task composes the saved command inside Hydra's app, on its search path
    again = run_sbrun("--config-dir", str(tmp_path / "myconf"), f"resume={run}", "epochs=2")
    assert again.returncode == 0, again.stderr
    assert summary(run)["epochs_completed"] == 2 and summary(run)["params"]["sampler"] == "mine"


# --- 9. one line that says what is allowed; nothing accepted without effect ---------------------

@pytest.mark.parametrize("override,expected", [
    ("beta=abc", "beta=abc is invalid; allowed: a number"),
    ("seed=1.5", "seed=1.5 is invalid; allowed: an integer"),
    ("epochs=2.5", "epochs=2.5 is invalid; allowed: an integer"),
    ("+foo=1", "foo is not a config key; allowed:"),
    ("betta=2", "betta is not a config key; allowed:"),
    ("schedule.milestones=abc", "schedule.milestones=abc is invalid; allowed: a list"),
    ("sampler.keep=0.5", "sampler.keep has no effect with sampler=sb; allowed: beta, cadence"),
])
def test_messages_name_the_key_and_what_is_allowed(tmp_path, override, expected):
    res = run_sbrun(override, f"out_dir={tmp_path}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_offline_message_is_ours_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("SBRUN_OFFLINE", "1")
    res = run_sbrun("dataset=mnist", f"data_dir={tmp_path}", f"out_dir={tmp_path / 'out'}")
    line = res.stderr.strip()
    assert res.returncode == 2 and "\n" not in line
    assert "download=True" not in line and "SBRUN_OFFLINE=1" in line and "MNIST/raw" in line


def test_beta_for_a_sampler_without_one_is_said_and_not_recorded(tmp_path):
    res = run_sbrun(*TINY, "sampler=kath18", "beta=3", "epochs=1", f"out_dir={tmp_path}", "name=k")
    assert res.returncode == 0 and "beta has no effect with sampler=kath18" in res.stderr
    s = summary(tmp_path / "runs" / "k")
    assert s["config"]["beta"] is None and s["params"]["beta"] is None


def test_bf16_on_the_cpu_runs_bf16_and_records_what_applied(tmp_path):
    res = run_sbrun(*TINY, "precision=bf16", "model=cnn", "model.width=4", "epochs=1", f"out_dir={tmp_path}",
                    "name=p")
    assert res.returncode == 0, res.stderr
    eff = summary(tmp_path / "runs" / "p")["effective"]
    assert eff["precision"] == "bf16" and eff["channels_last"] is True
    assert summary(tmp_path / "runs" / "p")["final_test_acc"] > 0.3


def test_without_checkpoints_a_stopped_run_says_it_cannot_continue(tmp_path):
    args = [*TINY, "checkpoint.enabled=false", f"out_dir={tmp_path}", "name=c"]
    stopped = run_killed(tmp_path, 20, "SIGTERM", *args)
    assert stopped.returncode == 3
    s = summary(tmp_path / "runs" / "c")
    assert s["status"] == "stopped" and "resume_hint" not in s and "cannot be continued" in stopped.stdout
    before = (tmp_path / "runs" / "c" / "metrics.csv").read_bytes()
    again = run_sbrun(f"resume={tmp_path / 'runs' / 'c'}")
    assert again.returncode == 2 and "no checkpoint" in again.stderr
    assert (tmp_path / "runs" / "c" / "metrics.csv").read_bytes() == before      # nothing overwritten


def test_a_run_at_chance_accuracy_says_so(tmp_path):
    res = run_sbrun(*TINY, "optim.lr=1e-9", "epochs=1", f"out_dir={tmp_path}", "name=z")
    assert res.returncode == 0
    s = summary(tmp_path / "runs" / "z")
    assert "chance" in s["warning"] and "chance accuracy" in res.stdout.strip().splitlines()[-1]

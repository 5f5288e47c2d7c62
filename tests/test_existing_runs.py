"""Ways into an existing run directory (issue 18): one identity check for fresh, skip, extend and
resume; a refused resume changes nothing and says what to do; wall time across a mid-epoch
resume; one stop message when loader workers share the terminal's Ctrl-C."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import TINY, run_killed, run_sbrun
from sbrun import checkpoint as ckpt


def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(res):
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# --- 1. a finished name= never skips a different experiment -------------------------------------

@pytest.mark.parametrize("change,key,saved,now", [
    (["sampler=traditional"], "sampler.name", "'sb'", "'traditional'"),
    (["dataset.n_train=256", "seed=7"], "dataset.n_train", "512", "256"),
])
def test_a_taken_name_refuses_a_different_experiment_finished_or_not(tmp_path, change, key, saved, now):
    args = [*TINY, "epochs=2", f"out_dir={tmp_path}", "name=ref"]
    assert run_sbrun(*args).returncode == 0
    run = tmp_path / "runs" / "ref"
    before = tree_hashes(run)
    for extra in ([], ["epochs=3"]):          # the skip path and the extend path
        res = run_sbrun(*args, *change, *extra)
        line = one_line(res)
        assert res.returncode == 2 and f"{key} cannot change" in line and saved in line and now in line
        assert tree_hashes(run) == before     # refused before Hydra or the run wrote anything
    # an unfinished run is refused the same way
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "stopped"}))
    res = run_sbrun(*args, *change)
    assert res.returncode == 2 and f"{key} cannot change" in one_line(res)
    # the same experiment is still skipped (finished) or extended
    (run / "summary.json").write_text(json.dumps(summary))
    assert "already holds a finished run" in run_sbrun(*args).stdout


# --- 2. a refused resume changes nothing, exits 2 and says what to do ---------------------------

@pytest.mark.parametrize("keep", [1, 2])
def test_a_refused_resume_leaves_every_file_byte_identical(tmp_path, keep):
    args = [*TINY, "epochs=3", f"checkpoint.keep={keep}", f"out_dir={tmp_path}", "name=r"]
    assert run_sbrun(*args).returncode == 0
    run = tmp_path / "runs" / "r"
    path = ckpt.latest(run)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = tree_hashes(run)
    for cmd in ([f"resume={run}", "epochs=5"], [*args, "epochs=5"]):     # resume= and the extend path
        res = run_sbrun(*cmd)
        line = one_line(res)
        assert res.returncode == 2 and "SHA-256" in line and "unchanged" in line and "new name=" in line
        if keep == 2:
            assert f"delete {path.name} and {path.stem}.json to resume from e00002.pt" in line
        assert tree_hashes(run) == before
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


# --- 4. wall time across a mid-epoch resume -----------------------------------------------------

def test_wall_time_is_at_least_train_time_after_a_mid_epoch_resume(tmp_path):
    args = [*TINY, "sampler=traditional", "epochs=2", f"out_dir={tmp_path}", "name=w"]
    # SIGTERM after step 12, each step before it 50 ms slower, so the epoch's time before the stop
    # is far larger than any overhead of the resume
    stopped = run_killed(tmp_path, 12, "SIGTERM", *args, sleep=0.05)
    assert stopped.returncode == 3, stopped.stderr
    run = tmp_path / "runs" / "w"
    assert ckpt.load(ckpt.latest(run))["chunk"]          # stopped inside epoch 1
    assert run_sbrun(f"resume={run}").returncode == 0
    df = pd.read_csv(run / "metrics.csv")
    assert list(df["epoch"]) == [1, 2]
    assert df.loc[0, "train_time_s"] > 12 * 0.05         # the slowed steps before the stop count
    assert (df["wall_time_s"] >= df["train_time_s"]).all(), df[["wall_time_s", "train_time_s"]]


# --- 5. one stop message with DataLoader workers -------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_on_the_loader_path_says_its_stop_once(tmp_path):
    """Ctrl-C reaches the whole process group; the forked workers must not answer it too."""
    args = [*TINY, "dataset.n_train=4096", "epochs=50", "data_path=loader", "num_workers=2",
            f"out_dir={tmp_path}", "name=c"]
    proc = subprocess.Popen([sys.executable, "-m", "sbrun", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    out = []
    for line in proc.stdout:
        out.append(line)
        if "epoch   1/" in line:
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGINT)
            break
    out += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 3
    text = "".join(out)
    assert text.count("received SIGINT") == 1 and text.count("stopped by signal") == 1, text


def test_a_run_recorded_before_a_key_existed_keeps_its_identity():
    """Keys added later (dataset.storage, schedule.warmup, ...) are left out of the record at the
    default that reproduces the older runs, so those runs still skip, extend and resume; a
    non-default value is part of the identity."""
    from conftest import make_config
    from sbrun.config import ConfigError
    from sbrun.identity import ADDED_LATER, check_compatible, to_dict

    cfg = make_config(["dataset=digits"])
    recorded = to_dict(cfg)
    assert all(key not in recorded[group] for group, key in ADDED_LATER)
    check_compatible(recorded, to_dict(cfg), "run directory")
    warm = to_dict(make_config(["dataset=digits", "schedule.warmup=0.1"]))
    assert warm["schedule"]["warmup"] == 0.1
    with pytest.raises(ConfigError, match="schedule.warmup cannot change"):
        check_compatible(recorded, warm, "run directory")

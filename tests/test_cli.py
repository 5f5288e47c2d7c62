"""The real `sbrun` command in subprocesses: end to end, sweeps, and one-line errors."""
import json

import pandas as pd
import pytest

from conftest import run_sbrun, sbrun_cli

FAST = ["dataset.subset=256", "dataset.test_subset=128", "epochs=2", "plots=false", "batch_size=32"]


def only_run(out):
    runs = [p for p in (out / "runs").iterdir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize("sampler", ["traditional", "sb", "stale_sb"])
def test_end_to_end_run_per_sampler(tmp_path, sampler):
    # One of them through the installed console script in a fresh interpreter, the others in-process.
    if sampler == "sb":
        res = sbrun_cli(f"sampler={sampler}", f"out_dir={tmp_path}", *FAST, cwd=tmp_path)
    else:
        res = run_sbrun(f"sampler={sampler}", f"out_dir={tmp_path}", *FAST)
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path)
    df = pd.read_csv(run / "metrics.csv")
    assert list(df["epoch"]) == [1, 2]
    assert {"train_time_s", "backprops", "select_forwards", "test_error", "mislabeled_frac",
            "time_select_fwd_s", "time_train_fwd_s", "time_backward_s", "time_other_s"} <= set(df.columns)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"]["sampler"] == sampler
    assert f"sampler={sampler}" in summary["overrides"]
    assert "epoch   2/2" in res.stdout       # the readable per-epoch log line


def test_multirun_makes_one_directory_per_job(tmp_path):
    res = run_sbrun("--multirun", "sampler=traditional,sb,stale_sb", f"out_dir={tmp_path}", *FAST)
    assert res.returncode == 0, res.stderr
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 3
    samplers = {json.loads((j / "summary.json").read_text())["params"]["sampler"] for j in jobs}
    assert samplers == {"traditional", "sb", "stale_sb"}
    assert len(pd.read_csv(sweeps[0] / "runs.csv")) == 6


@pytest.mark.parametrize("override,key", [
    ("beta=0", "beta"),
    ("beta=-2", "beta"),
    ("label_noise=1.0", "label_noise"),
    ("label_noise=-0.1", "label_noise"),
    ("dataset=imagenet", "dataset"),
    ("model=vgg99", "model"),
    ("sampler=oracle", "sampler"),
    ("sampler.staleness=0", "sampler.staleness"),
    ("batch_size=0", "batch_size"),
    ("epochs=abc", "epochs"),
    ("not_a_key=1", "not_a_key"),
])
def test_bad_config_exits_nonzero_with_one_line_naming_the_key(tmp_path, override, key):
    res = run_sbrun(override, f"out_dir={tmp_path}")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("sbrun: error: ") and key in lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()      # nothing written before validation


def test_console_script_bad_input_is_one_line_without_traceback(tmp_path):
    res = sbrun_cli("beta=0", f"out_dir={tmp_path}", cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["sbrun: error: beta=0.0 is invalid; allowed: a number > 0"]


def test_bad_value_inside_a_sweep_stops_before_any_job(tmp_path):
    res = run_sbrun("-m", "beta=1,0", f"out_dir={tmp_path}", *FAST)
    assert res.returncode == 2 and "beta" in res.stderr
    assert not (tmp_path / "multirun").exists()


def test_device_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_sbrun("device=cuda", f"out_dir={tmp_path}")
    assert res.returncode == 2 and "device" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_every_sampler_runs_in_one_sweep(tmp_path):
    samplers = ["traditional", "sb", "stale_sb", "random", "kath18", "topk", "composer", "rho", "infobatch",
                "kakurenbo"]
    res = run_sbrun("-m", f"sampler={','.join(samplers)}", f"out_dir={tmp_path}", *FAST)
    assert res.returncode == 0, res.stderr
    sweep = next((tmp_path / "multirun").iterdir())
    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs["sampler"].unique()) == sorted(samplers)
    last = runs[runs["epoch"] == 2].set_index("sampler")["backprop_frac"]
    assert last["traditional"] == 1.0
    for name in samplers[1:]:             # every selecting sampler backpropagates a subset
        if name == "kath18":              # uniform until its variance-reduction estimate passes tau
            k = runs[runs["sampler"] == "kath18"]
            assert (k["vr_estimate"] > 0).all() and (k["backprop_frac"] < 0.9).tolist() == k["is_active"].shift(
                fill_value=0).astype(bool).tolist()
            continue
        if name == "infobatch":           # the reference's rule: epoch e prunes while e + 1 <= 0.875 * 2, never here
            assert last[name] == 1.0
            continue
        if name == "kakurenbo":           # hides only confidently learned examples: after one short epoch, few
            assert 0 < 1 - last[name] <= 0.3, last[name]
            continue
        assert last[name] < 0.9, (name, last[name])
    assert json.loads((sweep / "sweep_summary.json").read_text())["failed"] == []


def test_preflight_reads_the_flags_hydra_reads():
    # preflight parses the command line without Hydra's internals; a flag Hydra has and it lacks
    # would pass preflight unchecked, one it has and Hydra lacks would be checked for nothing
    from hydra._internal.utils import get_args_parser

    from sbrun.preflight import arg_parser, parse_args

    def flags(parser):
        return {(a.dest, tuple(sorted(a.option_strings)), a.nargs, a.const) for a in parser._actions}
    assert flags(arg_parser()) == {f for f in flags(get_args_parser()) if f[0] != "version"} | {
        ("version", ("--version",), 0, True)}
    args, rest = parse_args(["-m", "beta=1,2", "sampler=sb", "--config-dir", "extra", "-cn", "config"])
    assert args.multirun and args.overrides == ["beta=1,2", "sampler=sb"] and rest == []
    assert args.config_dir == "extra" and args.config_name == "config" and not args.help
    assert parse_args(["beta=1", "-m", "seed=2"])[1] == ["seed=2"]      # Hydra refuses this itself


def test_a_key_override_is_judged_after_the_overrides_before_it(tmp_path):
    # sbrun applies the key overrides in order, as Hydra does, to name the one Hydra refused
    res = run_sbrun("~sampler.history", "sampler.history=3", f"out_dir={tmp_path}")
    (line,) = res.stderr.strip().splitlines()
    assert res.returncode == 2 and line.startswith("sbrun: error: sampler.history has no effect with sampler=sb; ")
    allowed = line.split("allowed: ")[1].split(", ")
    assert "beta" in allowed and "staleness" in allowed and "history" not in allowed

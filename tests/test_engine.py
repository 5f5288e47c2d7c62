"""The training loop's guarantees, on tiny synthetic runs in-process."""
import pandas as pd
import pytest
import torch

from conftest import assert_same_run, comparable
from sbrun.build import build, resolve_device
from sbrun.config import ConfigError
from sbrun.loop import score


def metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv")


@pytest.mark.parametrize("sampler", ["sb", "stale_sb", "random", "topk", "kath18", "composer"])
def test_with_epoch_end_flush_every_step_is_a_full_batch_except_the_epoch_flush(run_tiny, steps, sampler):
    extra = ["sampler.variable_start=false"] if sampler == "kath18" else []
    run_dir, summary = run_tiny(f"sampler={sampler}", "sampler.epoch_end=flush", "epochs=4", "select_batch_size=48",
                                *extra, *steps.overrides)
    step_log = steps.read("epoch", "size", "total")
    df = metrics(run_dir)
    for epoch in range(4):
        sizes = [n for e, n, total in step_log if e == epoch]
        assert all(n == 32 for n in sizes[:-1]), sizes
        assert 1 <= sizes[-1] <= 32
        assert sum(sizes) == round(df["backprop_frac"].iloc[epoch] * 512)
    assert summary["total_backprops"] == sum(n for _, n, _ in step_log)


@pytest.mark.parametrize("sampler", ["sb", "stale_sb", "random", "topk", "kath18", "composer", "infobatch"])
def test_by_default_every_step_is_a_full_batch_and_leftovers_wait(run_tiny, steps, sampler):
    # select_batch_size=48 and 512 examples: an epoch's choice is rarely a multiple of 32, so
    # something is left at most epoch ends; it waits for the next epoch instead of a smaller step
    extra = ["sampler.variable_start=false"] if sampler == "kath18" else []
    run_dir, summary = run_tiny(f"sampler={sampler}", "epochs=4", "select_batch_size=48", *extra, *steps.overrides)
    step_log = steps.read("epoch", "size", "total")
    assert step_log and all(n == 32 for _, n, _ in step_log), step_log
    df = metrics(run_dir)
    per_epoch = [sum(n for e, n, _ in step_log if e == epoch) for epoch in range(4)]
    assert per_epoch == [round(f * 512) for f in df["backprop_frac"]]
    assert summary["total_backprops"] == 32 * len(step_log)        # the run's last leftovers: never counted


def test_traditional_keeps_its_partial_last_batch(run_tiny, steps):
    # 500 examples in batches of 32: 15 full steps and one of 500 mod 32 = 20, every epoch
    run_tiny("sampler=traditional", "dataset.n_train=500", "epochs=2", *steps.overrides)
    assert steps.read("size") == ([32] * 15 + [20]) * 2


def test_sb_backprops_about_a_third_after_priming(run_tiny):
    run_dir, _ = run_tiny("sampler=sb", "beta=2", "epochs=5")
    frac = metrics(run_dir)["backprop_frac"].tolist()
    assert frac[0] == 1.0                          # priming: everything
    assert all(0.15 < f < 0.45 for f in frac[1:]), frac


def test_stale_sb_runs_a_third_of_sbs_selection_forwards(run_tiny):
    sb_dir, _ = run_tiny("sampler=sb", "epochs=7")
    stale_dir, _ = run_tiny("sampler=stale_sb", "sampler.staleness=3", "epochs=7")
    sb, stale = metrics(sb_dir), metrics(stale_dir)
    # 6 epochs after priming: SB does 6 selection epochs, Stale-SB (n=3) does epochs 2 and 5.
    assert sb["select_forwards"].iloc[-1] == 6 * 512
    assert stale["select_forwards"].iloc[-1] == 2 * 512
    fresh = stale["select_forwards"].diff().fillna(stale["select_forwards"].iloc[0]).tolist()
    assert fresh == [0, 512, 0, 0, 512, 0, 0]
    # Stale epochs still select about the same fraction.
    assert all(0.15 < f < 0.5 for f in stale["backprop_frac"].iloc[1:]), stale["backprop_frac"].tolist()


def test_same_seed_same_run_other_seed_other_run(run_tiny):
    a, _ = run_tiny("sampler=sb", "seed=3")
    b, _ = run_tiny("sampler=sb", "seed=3")
    c, _ = run_tiny("sampler=sb", "seed=4")
    assert_same_run(a, b)
    assert not comparable(a).equals(comparable(c))


def test_counts_and_mislabeled_fraction_agree_with_the_metrics(run_tiny):
    run_dir, summary = run_tiny("sampler=sb", "label_noise=0.2", "epochs=4")
    counts = pd.read_csv(run_dir / "selection_counts.csv")
    df = metrics(run_dir)
    assert counts["noisy"].sum() == round(0.2 * 512) == summary["noisy_examples"]
    assert (counts["noisy"] == (counts["label"] != counts["true_label"])).all()
    assert counts["backprops"].sum() == df["backprops"].iloc[-1]
    assert df["mislabeled_frac"].iloc[0] == pytest.approx(102 / 512)   # priming: everything once
    # SB keeps choosing the high-loss mislabeled examples: above their 20% share afterwards.
    assert df["mislabeled_frac"].iloc[1:].mean() > 0.2


def test_csv_schema_and_run_outputs(run_tiny):
    run_dir, summary = run_tiny("sampler=sb")
    df = metrics(run_dir)
    required = {"epoch", "train_time_s", "wall_time_s", "select_forwards", "backprops", "backprop_frac", "lr",
                "train_loss", "test_loss", "test_acc", "test_error", "mislabeled_frac", "time_select_fwd_s",
                "time_train_fwd_s", "time_backward_s", "time_other_s"}
    assert required <= set(df.columns)
    assert df["epoch"].tolist() == [1, 2, 3]
    assert (df["train_time_s"].diff().dropna() > 0).all()
    assert (df["test_error"] + df["test_acc"]).round(9).eq(1).all()
    for key in ("final_test_acc", "best_test_acc", "total_backprops", "overrides", "git_commit", "torch",
                "device_name", "params", "config"):
        assert key in summary
    assert summary["status"] == "finished"
    for name in ("summary.json", "selection_counts.csv", "extremes.npz", "loss_snapshots.npz"):
        assert (run_dir / name).exists(), name


def test_training_actually_learns(run_tiny):
    _, summary = run_tiny("sampler=traditional", "epochs=4")
    assert summary["final_test_acc"] > 0.6      # 4 classes: chance is 0.25


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_scoring_forward_touches_batchnorm_statistics_only_in_train_mode(tiny_config, tmp_path, mode):
    cfg = tiny_config("model=cnn", "model.width=4", "sampler=sb", f"selection_forward={mode}")
    p = build(cfg, tmp_path, torch.device("cpu"))
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    p.stream.start_epoch(0)
    x, y = next(iter(p.stream.chunks(32))).images()
    score(p, x, y)
    after = p.model.state_dict()
    stats = [k for k in before if "running_mean" in k or "running_var" in k]
    weights = [k for k in before if k not in stats and "num_batches" not in k]
    assert all(torch.equal(before[k], after[k]) for k in weights)       # never the weights
    changed = [k for k in stats if not torch.equal(before[k], after[k])]
    assert (changed == []) == (mode == "eval"), changed


def test_device_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device"):
        resolve_device("cuda")

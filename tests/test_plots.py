"""Figures from tiny real runs, the sbrun-plot command, per-run figures and the sweep callback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, make_config, sbrun_cli  # the fixtures' own config helpers
from sbrun import merge, plot_cli
from sbrun.plots import data, images, per_run, report
from sbrun.plots.style import NotSupported
from sbrun.runner import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One tiny run per configuration the figures need: SB over two seeds (bands), Traditional (speedup
# baseline), Stale-SB n=2 (staleness), SB beta=1 (selectivity), 20% label noise (label-noise figure).
RUNS = {
    "trad0": ["sampler=traditional", "seed=0"],
    "sb0": ["sampler=sb", "seed=0"],
    "sb1": ["sampler=sb", "seed=1"],
    "stale2": ["sampler=stale_sb", "sampler.staleness=2"],
    "sb_beta1": ["sampler=sb", "beta=1"],
    "trad_noisy": ["sampler=traditional", "label_noise=0.2"],
    "sb_noisy": ["sampler=sb", "label_noise=0.2"],
}
# The budget figure's own runs: one configuration at two work budgets.
BUDGET_RUNS = {"sb_work1": ["sampler=sb", "budget.unit=work", "budget.amount=1.5", "schedule=linear"],
               "sb_work2": ["sampler=sb", "budget.unit=work", "budget.amount=2.5", "schedule=linear"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A directory of tiny finished runs (module-scoped: ~1 s per run, built once)."""
    root = tmp_path_factory.mktemp("sweep")
    for name, overrides in RUNS.items():
        train(make_config(TINY + overrides), root / name)
    return root


@pytest.fixture(scope="module")
def runs(sweep) -> pd.DataFrame:
    return data.prepare(data.attach_overrides(merge.merge_runs([sweep])))


@pytest.fixture(scope="module")
def budget_runs(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("budgets")
    for name, overrides in BUDGET_RUNS.items():
        train(make_config(TINY + overrides), root / name)
    return data.prepare(data.attach_overrides(merge.merge_runs([root])))


def assert_png(path: Path) -> None:
    assert path.exists(), path
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC and len(blob) > 5_000, f"{path}: {len(blob)} bytes"


@pytest.mark.parametrize("name", list(report.FIGURES))
def test_every_figure_writes_a_png(name, runs, tmp_path, request):
    df = request.getfixturevalue("budget_runs") if name == "budget" else runs
    written = report.FIGURES[name](df, tmp_path, ("png",))
    assert written, name
    for path in written:
        assert path.suffix == ".png" and path.parent == tmp_path
        assert_png(path)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_selected_images_skip_traditional_and_name_each_configuration(runs, tmp_path):
    names = {p.name for p in images.selected_images(runs, tmp_path, ("png",))}
    assert {"selected_images_sb_b2_33pct.png", "selected_images_sb_b1_50pct.png",
            "selected_images_stale-sb_n2_b2_33pct.png", "selected_images_sb_b2_33pct_noise20pct.png"} <= names
    assert not any("traditional" in n for n in names)


def test_figures_without_their_data_are_skipped_with_a_reason(runs, tmp_path):
    plain = runs[runs["run"].str.endswith(("trad0", "sb0"))]
    for fig in ("staleness", "label_noise", "selectivity"):
        with pytest.raises(NotSupported, match="needs"):
            report.FIGURES[fig](plain, tmp_path, ("png",))
    result = report.make_all(plain, tmp_path / "out", ("png",))
    assert {n.split(":")[0] for n in result.skipped} == {"staleness", "label_noise", "selectivity", "budget"}
    assert not result.failed
    assert tmp_path / "out" / "time_to_accuracy.png" in result.written


def test_a_failing_figure_does_not_cost_the_others(runs, tmp_path, monkeypatch, capsys, sweep):
    def broken(df, out_dir, formats):
        raise KeyError("boom")
    monkeypatch.setitem(report.FIGURES, "loss_cdf", broken)
    assert plot_cli.main([str(sweep), "-o", str(tmp_path), "--only", "loss_cdf,error_vs_epochs",
                          "--format", "png"]) == 1
    assert "sbrun-plot: error: figure loss_cdf: KeyError" in capsys.readouterr().err
    assert_png(tmp_path / "error_vs_epochs.png")


def test_mislabeled_examples_are_framed_in_red():
    k = 6
    noisy = np.array([True, False, True, False, False, False])
    ex = {f"{n}_{f}": v for n in ("most", "least") for f, v in (
        ("index", np.arange(k)), ("images", np.zeros((k, 1, 8, 8), np.uint8)), ("label", np.arange(k)),
        ("true_label", (np.arange(k) + 1) % 10), ("noisy", noisy if n == "most" else np.zeros(k, bool)),
        ("count", np.full(k, 5 if n == "most" else 1)))}
    ex["classes"] = np.array([str(i) for i in range(10)])
    fig = images.extremes_figure(ex, "test")
    ax = fig.axes[0]
    frames = [p for p in ax.patches if p.get_edgecolor()[:3] == pytest.approx((214 / 255, 39 / 255, 40 / 255))]
    assert len(frames) == 2
    texts = [t.get_text() for t in ax.texts]
    assert "true: 1" in texts and "true: 3" in texts and "true: 2" not in texts
    assert "0 ×5" in texts and "5 ×1" in texts


def test_per_run_writes_its_figures(sweep):
    written = per_run(sweep / "sb_noisy")
    assert {p.name for p in written} == {"time_to_accuracy.png", "selected_images.png"}
    for p in written:
        assert p.parent == sweep / "sb_noisy" / "figures"
        assert_png(p)
    # Traditional backprops every example equally often: no grid, but the curve.
    assert [p.name for p in per_run(sweep / "trad0")] == ["time_to_accuracy.png"]


def test_training_with_plots_on_writes_per_run_figures(run_tiny):
    run_dir, _ = run_tiny("sampler=sb", "plots=true")
    assert_png(run_dir / "figures" / "time_to_accuracy.png")
    assert_png(run_dir / "figures" / "selected_images.png")


def test_plot_command_writes_everything_and_prints_the_table(sweep, tmp_path, capsys):
    out = tmp_path / "figs"
    # Every figure function is covered above; here two of them, in both formats, via the command.
    figs = ("time_to_accuracy", "staleness")
    assert plot_cli.main([str(sweep), "-o", str(out), "--format", "png,pdf", "--only", ",".join(figs)]) == 0
    printed = capsys.readouterr().out
    assert "| Traditional (100%) | 1 |" in printed and "| SB β=2 (33%) | 2 |" in printed
    merged = pd.read_csv(out / "runs.csv")
    assert merged["run"].nunique() == len(RUNS) and len(merged) == 3 * len(RUNS)
    assert {"sampler", "beta", "staleness", "label_noise", "seed", "test_error"} <= set(merged.columns)
    for name in ("speedup.csv", "speedup.md", "results.csv", "results.md"):
        assert (out / name).stat().st_size > 0
    for fig in figs:
        assert_png(out / f"{fig}.png")
        assert (out / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"


def test_plot_command_default_output_is_under_the_first_path(sweep, capsys):
    assert plot_cli.main([str(sweep / "sb0"), "--only", "time_to_accuracy", "--format", "png"]) == 0
    assert_png(sweep / "sb0" / "figures" / "time_to_accuracy.png")
    assert (sweep / "sb0" / "figures" / "runs.csv").exists()


@pytest.mark.parametrize("kind", ["empty", "foreign", "missing"])
def test_plot_command_refuses_directories_without_runs(kind, tmp_path, capsys):
    target = tmp_path / "d"
    if kind != "missing":
        target.mkdir()
    if kind == "foreign":
        (target / "notes.txt").write_text("not a run\n")
        (target / "sub").mkdir()
        (target / "sub" / "metrics.csv").write_text("epoch,test_error\n1,0.5\n")
    before = sorted(tmp_path.rglob("*"))
    assert plot_cli.main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sbrun-plot: error: ") and str(target) in err
    assert sorted(tmp_path.rglob("*")) == before, "nothing may be written"


@pytest.mark.parametrize("args,needle", [(["--format", "gif"], "--format"), (["--target-k", "0.5"], "--target-k"),
                                         (["--only", "nope"], "unknown figure")])
def test_plot_command_rejects_bad_options_in_one_line(args, needle, sweep, capsys):
    assert plot_cli.main([str(sweep)] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_installed_script_exit_code_and_single_line(tmp_path):
    exe = Path(sys.executable).with_name("sbrun-plot")
    res = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("sbrun-plot: error:")
    assert res.stdout == ""


@pytest.mark.slow   # a real two-job sweep in a subprocess: ~12 s on 2 cores
def test_multirun_callback_writes_runs_csv(tmp_path):
    res = sbrun_cli("--multirun", "sampler=traditional,sb", "debug=fast", f"out_dir={tmp_path}", "name=cb",
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    merged = pd.read_csv(tmp_path / "multirun" / "cb" / "runs.csv")
    assert sorted(merged["sampler"].unique()) == ["sb", "traditional"]
    assert merged.groupby("run")["epoch"].apply(list).map(tuple).unique().tolist() == [(1, 2)]
    assert (tmp_path / "multirun" / "cb" / "sweep_summary.json").exists()

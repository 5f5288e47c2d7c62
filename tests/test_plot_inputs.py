"""sbrun-plot on inputs that used to make it wrong without saying so: configurations told apart only
by epochs or a new params key, duplicate seeds, targets above 100% error, damaged run records, the
choice of baseline, and one-seed configurations. Runs are hand-written run directories
(summary.json + metrics.csv), so every expected number can be worked out by hand."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from sbrun import merge, plot_cli
from sbrun.plots import curves, data, report, style

SB_BETA = {"sb": 2.0, "sb1": 1.0}


def write_run(root: Path, name: str, sampler: str = "traditional", seed: int = 0, errors=(0.5, 0.3, 0.2),
              status: str = "finished", completed: int | None = None, extra: dict | None = None,
              work=None) -> Path:
    """A run directory as sbrun writes it: metrics.csv (epoch, time, backprops, test error and,
    if given, cumulative work) and summary.json. `sb1` is SB at beta=1."""
    run = root / name
    run.mkdir(parents=True)
    beta = SB_BETA.get(sampler)
    params = {"dataset": "toy", "model": "mlp", "sampler": "sb" if beta else sampler, "beta": beta,
              "staleness": 1 if beta else None, "selectivity": 1 / (1 + beta) if beta else 1.0,
              "label_noise": 0.0, "seed": seed, "batch_size": 32, "epochs": len(errors), "lr": 0.1, **(extra or {})}
    rows = ["epoch,train_time_s,backprops,test_error" + (",work" if work is not None else "")]
    for e, err in enumerate(errors):
        time = (e + 1) * (1.0 if sampler == "traditional" else 0.5) + 0.1 * seed
        rows.append(f"{e + 1},{time},{100 * (e + 1)},{err}" + (f",{work[e]}" if work is not None else ""))
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = {"status": status, "params": params, "overrides": [f"sampler={params['sampler']}", f"seed={seed}"],
               "epochs_completed": len(errors) if completed is None else completed, "n_train": 100}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def plot(*args) -> int:
    return plot_cli.main([str(a) for a in args])


def tables_only(root: Path, out: Path, *extra) -> int:
    return plot(root, "-o", out, "--only", "tables", "--format", "png", *extra)


def speedups_at(out: Path, k: float, index: str = "label") -> pd.DataFrame:
    """speedup.csv's rows at target k (the file is long: one row per configuration and target)."""
    sp = pd.read_csv(out / "speedup.csv")
    return sp[sp["k"] == k].set_index(index)


def err_lines(capsys) -> tuple[str, list[str]]:
    cap = capsys.readouterr()
    return cap.out, [line for line in cap.err.splitlines() if line.strip()]


def listing(path: Path) -> list:
    return sorted(p.relative_to(path) for p in path.rglob("*"))


# --- what a configuration is -------------------------------------------------------------------

def test_groups_that_differ_only_in_epochs_get_their_own_files_and_headings(tmp_path, capsys):
    root = tmp_path / "runs"
    for epochs in (3, 4):
        errors = [0.5, 0.3, 0.2, 0.1][:epochs]
        write_run(root / f"e{epochs}", "trad", "traditional", errors=errors)
        write_run(root / f"e{epochs}", "sb", "sb", errors=errors)
    out = tmp_path / "out"
    assert plot(root, "-o", out, "--only", "time_to_accuracy", "--format", "png") == 0
    figures = sorted(p.name for p in out.glob("time_to_accuracy*.png"))
    assert figures == ["time_to_accuracy_epochs_3.png", "time_to_accuracy_epochs_4.png"]
    md = (out / "speedup.md").read_text()
    assert "### toy / mlp, batch_size=32, lr=0.1, epochs=3, label noise 0%" in md
    assert "### toy / mlp, batch_size=32, lr=0.1, epochs=4, label noise 0%" in md
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and set(results["seeds"]) == {1}


def test_every_params_key_but_the_seed_and_operational_ones_makes_a_configuration(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        # num_workers is operational (the key table): runs differing in it are seeds of one configuration
        write_run(root, f"trad{seed}", "traditional", seed, extra={"selection_forward": "eval", "num_workers": seed})
        write_run(root, f"eval{seed}", "sb", seed, extra={"selection_forward": "eval"})
        write_run(root, f"train{seed}", "sb", seed, extra={"selection_forward": "train"})
        write_run(root, f"budget{seed}", "sb", seed, extra={"selection_forward": "eval", "budget_amount": 2})
    df = data.prepare(data.attach_overrides(merge.merge_runs([root])))
    cfgs = data.configs(df)
    assert len(cfgs) == 4 and set(cfgs["seeds"]) == {2}
    # selection_forward is compared within an experiment (a knob); a budget makes its own experiment
    assert df["experiment"].nunique() == 2
    labels = style.config_labels(cfgs, within="group")
    assert sorted(labels.values()) == ["SB β=2 (33%)", "SB β=2 (33%), selection_forward=eval",
                                       "SB β=2 (33%), selection_forward=train",
                                       "Traditional (100%), selection_forward=eval"]
    suffixes = sorted(s for s, _ in data.per_experiment(df))
    assert suffixes == ["_budget_amount_2", "_budget_amount_default"]     # never "_none" (issue 18, item 10)
    assert data.describe_group(df[df["run"].str.endswith("budget0")].iloc[0]).endswith(
        "epochs=3, budget_amount=2, label noise 0%")


def test_overrides_the_params_record_or_the_key_table_calls_operational_are_no_setting():
    setting, variant = data.split_overrides(
        ["budget.unit=work", "num_workers=4", "checkpoint.every=2", "hydra.job.chdir=true", "schedule=linear",
         "sampler.prune_ratio=0.3", "sampler.history=64"],
        params=["budget_unit", "prune_ratio", "sampler"])
    assert setting == "schedule=linear"
    assert variant == "sampler.history=64"


@pytest.mark.parametrize("sampler,label", [("infobatch", "InfoBatch"), ("kakurenbo", "KAKURENBO"),
                                           ("rho", "RHO-LOSS")])
def test_new_samplers_have_a_name_and_their_own_colour(sampler, label):
    assert style.base_label({"sampler": sampler, "beta": None, "selectivity": 0.5}) == f"{label} (50%)"
    colour = style.FAMILIES[sampler][1]
    others = [c for name, (_, c) in style.FAMILIES.items() if name != sampler]
    assert colour not in others and colour not in style.EXTRA_COLOURS


# --- duplicates ----------------------------------------------------------------------------------

def test_a_configuration_and_seed_run_twice_counts_once(tmp_path, capsys):
    root = tmp_path / "runs"
    five = {"epochs": 5}
    for seed in (0, 1):
        write_run(root, f"trad{seed}", "traditional", seed, extra=five)
    # seed 0 twice: finished on its time budget after 3 of 5 epochs, and stopped after 4 (kept: finished)
    write_run(root, "sb_a", "sb", 0, extra=five)
    write_run(root, "sb_b", "sb", 0, status="stopped", errors=(0.5, 0.4, 0.3, 0.25), extra=five)
    write_run(root, "sb_c", "sb", 1, extra=five)
    assert tables_only(root, tmp_path / "out") == 0
    out, err = err_lines(capsys)
    assert "| SB β=2 (33%) | 2 |" in out
    dup = [line for line in err if "(configuration, seed)" in line]
    assert len(dup) == 1 and f"{root / 'sb_b'} (kept {root / 'sb_a'})" in dup[0]
    assert not any("not finished" in line for line in err)    # the stopped duplicate is gone
    assert "sb_b" not in set(pd.read_csv(tmp_path / "out" / "runs.csv")["run"].str[-4:])


def test_which_duplicate_is_kept(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "few", "sb", 0, errors=(0.5, 0.3), extra={"epochs": 3})
    write_run(root, "more", "sb", 0, errors=(0.5, 0.3, 0.2))                   # finished, most epochs
    write_run(root, "old", "traditional", 0)
    new = write_run(root, "new", "traditional", 0)
    os.utime(root / "old" / "summary.json", (1_000_000, 1_000_000))             # same otherwise: the newer wins
    os.utime(new / "summary.json", (2_000_000, 2_000_000))
    df, dropped = data.drop_duplicate_seeds(merge.merge_runs([root]))
    assert sorted((Path(d).name, Path(k).name) for d, k in dropped) == [("few", "more"), ("old", "new")]
    assert sorted(Path(r).name for r in df["run"].unique()) == ["more", "new"]


# --- targets above 100% ------------------------------------------------------------------------

def test_targets_above_100_percent_error_are_no_targets(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "trad", "traditional", errors=(0.95, 0.9, 0.9))
    write_run(root, "sb", "sb", errors=(0.95, 0.92, 0.91))
    assert tables_only(root, tmp_path / "out") == 0
    out, err = err_lines(capsys)
    assert "1.1× = 99.00%, 1.2× = –, 1.4× = –" in out
    assert "108" not in out and "126" not in out
    assert len([line for line in err if "above 100%" in line]) == 1
    sp = pd.read_csv(tmp_path / "out" / "speedup.csv")
    assert sp.loc[sp["k"] == 1.2, "target"].isna().all() and sp.loc[sp["k"] == 1.1, "target"].notna().all()
    # no target, no counts: the cells are empty, not zeros that would read "nobody reached it"
    assert sp.loc[sp["k"] == 1.2, ["reached", "not_reached", "speedup_n"]].isna().all().all()
    sb_line = next(line for line in out.splitlines() if line.startswith("| SB β=2"))
    assert sb_line.rstrip().endswith("| – | – |")


# --- damaged run records ------------------------------------------------------------------------

def _damage(run: Path, kind: str) -> Path:
    """Damage a run's records the way a crash, a bad copy or a user can; returns the file named."""
    metrics = run / "metrics.csv"
    if kind == "garbage-binary":
        metrics.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe,\x01\n\x02,\x03,\x04,\x05\n")
    elif kind == "garbage-text":
        metrics.write_text("epoch,test_error\n1,0.5\n2,0.4,9,9,9\n")
    elif kind == "wrong-table":
        metrics.write_text("index,label,backprops\n0,3,1\n")
    elif kind == "truncated":
        metrics.write_text("\n".join(metrics.read_text().splitlines()[:3]) + "\n")    # 2 of 3 epochs
    elif kind == "truncated-mid-row":
        text = metrics.read_text()
        metrics.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 4])
    elif kind == "deleted":
        metrics.unlink()
    elif kind == "summary":
        (run / "summary.json").write_text("{not json")
        return run / "summary.json"
    return metrics


DAMAGE = ["garbage-binary", "garbage-text", "wrong-table", "truncated", "truncated-mid-row", "deleted", "summary"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_run_is_skipped_with_one_line_naming_its_file(kind, tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "trad", "traditional")
    write_run(root, "sb0", "sb", 0)
    bad = _damage(write_run(root, "sb1", "sb", 1), kind)
    assert tables_only(root, tmp_path / "out") == 0
    out, err = err_lines(capsys)
    named = [line for line in err if str(bad.parent) in line]
    assert len(named) == 1 and str(bad) in named[0] and named[0].endswith("run skipped"), err
    assert "Traceback" not in "\n".join(err)
    assert "| SB β=2 (33%) | 1 |" in out
    assert not pd.read_csv(tmp_path / "out" / "runs.csv")["run"].str.endswith("sb1").any()


@pytest.mark.parametrize("kind", DAMAGE)
def test_nothing_usable_left_is_refused_in_one_line_and_writes_nothing(kind, tmp_path, capsys):
    root = tmp_path / "runs"
    bad = _damage(write_run(root, "sb1", "sb", 1), kind)
    before = listing(tmp_path)
    assert plot(root) == 2
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("sbrun-plot: error: ") and str(bad) in err[0], err
    assert out == "" and listing(tmp_path) == before


def test_a_run_without_epochs_yet_is_not_a_damaged_run(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "trad", "traditional")
    starting = write_run(root, "starting", "sb", status="running", completed=0)
    (starting / "metrics.csv").unlink()
    assert tables_only(root, tmp_path / "out") == 0
    _, err = err_lines(capsys)
    assert not any("starting" in line for line in err)


# --- the baseline --------------------------------------------------------------------------------

@pytest.fixture
def three(tmp_path) -> Path:
    """Traditional and SB beta=2 over seeds 0 and 1, SB beta=1 over seed 0."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, f"trad{seed}", "traditional", seed, errors=(0.5, 0.3, 0.2))
        write_run(root, f"sb{seed}", "sb", seed, errors=(0.5, 0.22, 0.2))
    write_run(root, "sb1_0", "sb1", 0, errors=(0.5, 0.3, 0.22))
    return root


def test_baseline_by_label(three, tmp_path, capsys):
    assert tables_only(three, tmp_path / "out", "--baseline", "SB β=2") == 0
    out, _ = err_lines(capsys)
    assert "Baseline: SB β=2 (33%), final test error (%) 20.00 [20.00, 20.00] (2 seeds)" in out
    sp = speedups_at(tmp_path / "out", 1.2)
    assert sp.loc["SB β=2 (33%)", "pairing"] == "baseline"
    assert sp.loc["Traditional (100%)", "pairing"] == "paired"
    # target 1.2 x 0.2 = 0.24, interpolated: SB beta=2 (errors .5, .22) is 26/28 of the way from epoch 1
    # (0.5 s, 0.6 s) to epoch 2 (1.0 s, 1.1 s); Traditional (errors .3, .2) 0.6 of the way from epoch 2
    # (2.0 s, 2.1 s) to 3 (3.0 s, 3.1 s). Paired speedups: their ratios, as a geometric mean.
    sb_t = [0.5 + 0.5 * 26 / 28, 0.6 + 0.5 * 26 / 28]
    trad_t = [2.6, 2.7]
    assert sp.loc["Traditional (100%)", "time"] == pytest.approx((trad_t[0] * trad_t[1]) ** 0.5)
    assert sp.loc["Traditional (100%)", "speedup_gmean"] == pytest.approx(
        (sb_t[0] / trad_t[0] * sb_t[1] / trad_t[1]) ** 0.5)
    assert sp.loc["SB β=1 (50%)", "pairing"] == "unpaired"


def test_the_default_baseline_is_traditional_and_naming_it_changes_nothing(three, tmp_path, capsys):
    assert tables_only(three, tmp_path / "a") == 0
    assert tables_only(three, tmp_path / "b", "--baseline", "traditional") == 0
    assert (tmp_path / "a" / "speedup.md").read_text() == (tmp_path / "b" / "speedup.md").read_text()
    assert "Baseline: Traditional (100%)" in (tmp_path / "a" / "speedup.md").read_text()


@pytest.mark.parametrize("spec,needles", [
    ("sb", ["ambiguous", "SB β=1 (50%) and SB β=2 (33%)", "allowed: a sampler name (traditional, sb)"]),
    ("nope", ["matches no configuration", "allowed: a sampler name (traditional, sb)", "SB β=1 (50%)"]),
])
def test_an_ambiguous_or_unknown_baseline_is_refused_in_one_line(spec, needles, three, tmp_path, capsys):
    before = listing(tmp_path)
    assert plot(three, "--baseline", spec) == 2
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("sbrun-plot: error: --baseline"), err
    assert all(n in err[0] for n in needles), err[0]
    assert out == "" and listing(tmp_path) == before


def test_two_traditional_configurations_need_a_named_baseline(tmp_path, capsys):
    # a sweep over selection_forward runs Traditional twice (it ignores the key, but records it)
    root = tmp_path / "runs"
    for mode in ("eval", "train"):
        write_run(root, f"trad_{mode}", "traditional", extra={"selection_forward": mode})
        write_run(root, f"sb_{mode}", "sb", extra={"selection_forward": mode}, errors=(0.5, 0.22, 0.2))
    assert plot(root) == 2
    _, err = err_lines(capsys)
    assert len(err) == 1 and "--baseline 'traditional' (the default) is ambiguous" in err[0]
    assert "Traditional (100%), selection_forward=eval and Traditional (100%), selection_forward=train" in err[0]
    assert tables_only(root, tmp_path / "out", "--baseline", "traditional,selection_forward=eval") == 0
    sp = speedups_at(tmp_path / "out", 1.2)
    assert sp.loc["Traditional (100%), selection_forward=eval", "pairing"] == "baseline"
    assert sp.loc["SB β=2 (33%), selection_forward=train", "pairing"] == "paired"


def test_without_a_traditional_run_the_default_baseline_gives_no_speedups(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "sb", "sb")
    assert tables_only(root, tmp_path / "out") == 0
    assert "No group has a baseline configuration" in err_lines(capsys)[0]


# --- bands ----------------------------------------------------------------------------------------

def _bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_a_one_seed_configuration_gets_no_band_and_says_so(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, f"trad{seed}", "traditional", seed, errors=(0.5, 0.3 + 0.04 * seed, 0.2))
    write_run(root, "sb", "sb", 0)
    df = data.prepare(merge.merge_runs([root]))
    _, (ax,) = style.new_figure(1)
    curves.draw_curves(ax, df, "train_time_s")
    bands = _bands(ax)
    assert len(bands) == 1                        # Traditional's; none for one-seed SB
    assert bands[0].get_facecolor()[0][:3] == pytest.approx((0.0, 0.0, 0.0))
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["Traditional (100%)", "SB β=2 (33%) (1 seed, no band)"]
    # the band is the t interval: at epoch 2 the errors .30/.34 give s = .04/sqrt(2), so
    # 0.32 ± t_{0.975,1} * s / sqrt(2) = 0.32 ± 12.706205 * 0.02 (epochs 1 and 3 agree: no width)
    top = bands[0].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(100 * (0.32 + 12.706205 * 0.02), rel=1e-5)
    assert "'1 seed, no band'" in curves.band_note(df)

    alone = df[df["sampler"] == "sb"]
    _, (ax,) = style.new_figure(1)
    curves.draw_curves(ax, alone, "train_time_s")
    assert _bands(ax) == [] and [line.get_label() for line in ax.get_lines()] == ["SB β=2 (33%)"]
    assert curves.band_note(alone).startswith("one seed per configuration")


# --- work ---------------------------------------------------------------------------------------

def test_work_to_target_in_traditional_epochs(tmp_path, capsys):
    # metrics.csv's work is cumulative, in Traditional-epoch equivalents: Traditional does one per
    # epoch; SB's first (priming) epoch is one, later ones half (selection forwards + a third of
    # the backprops at the paper's 1 : 3 cost ratio).
    root = tmp_path / "runs"
    write_run(root, "trad", "traditional", work=[1.0, 2.0, 3.0])
    write_run(root, "sb", "sb", work=[1.0, 1.5, 2.0])
    assert tables_only(root, tmp_path / "out") == 0
    out, _ = err_lines(capsys)
    sp = speedups_at(tmp_path / "out", 1.2, "sampler")
    # target 1.2 x 0.2 = 0.24, crossed between epochs 2 (.3) and 3 (.2), 0.6 of the way by both
    # (interpolated): 2.6 vs 1.5 + 0.6 * 0.5 = 1.8 Traditional epochs of work
    assert sp.loc["traditional", "work"] == pytest.approx(2.6)
    assert sp.loc["sb", "work"] == pytest.approx(1.8)
    assert sp.loc["sb", "baseline_work"] == pytest.approx(2.6)
    assert sp.loc["sb", "work_speedup_gmean"] == pytest.approx(2.6 / 1.8)
    assert sp.loc["sb", "work_speedup_n"] == 1 and pd.isna(sp.loc["sb", "work_speedup_ci_low"])   # one seed
    assert "Speedup in work (work to the target, in Traditional-epoch equivalents):" in out
    # seed 0, as the baseline's: paired; the cell shows both works over the ratio's one seed
    assert "| SB β=2 (33%) | paired | 1.47× (1.9 vs 2.8 ep) | 1.44× (1.8 vs 2.6 ep) |" in out


def test_clean_reports_no_duplicates_on_clean_runs(three):
    df, notes = report.clean(merge.merge_runs([three]))
    assert notes == [] and df["run"].nunique() == 5


# --- the equal-compute figure ------------------------------------------------------------------

def test_final_error_against_budget_joins_budgets_of_one_configuration(tmp_path):
    from sbrun.plots import budget

    finals = {("traditional", 2): (0.30, 0.34), ("traditional", 4): (0.20, 0.22), ("sb", 2): (0.36, 0.40),
              ("sb", 4): (0.21, 0.25)}
    for (sampler, amount), errs in finals.items():
        for seed, err in enumerate(errs):
            write_run(tmp_path / "runs", f"{sampler}_{amount}_{seed}", sampler, seed, errors=(0.6, err),
                      extra={"epochs": None, "budget_unit": "work", "budget_amount": amount})
    df = report.clean(merge.merge_runs([tmp_path / "runs"]))[0]
    drawn = {}

    def spy(self, x, y, yerr=None, **kw):       # capture what each line shows
        drawn[kw["label"]] = (list(x), list(y), list(yerr))
    import matplotlib.axes
    original = matplotlib.axes.Axes.errorbar
    matplotlib.axes.Axes.errorbar = spy
    try:
        files = budget.budget(df, tmp_path / "fig", ("png",))
    finally:
        matplotlib.axes.Axes.errorbar = original
    assert [f.name for f in files] == ["budget_work.png"]
    assert set(drawn) == {"Traditional (100%)", "SB β=2 (33%)"}
    x, y, (below, above) = drawn["SB β=2 (33%)"]
    assert x == [2, 4] and y == pytest.approx([38.0, 23.0])
    # two seeds: half-width t(0.975, 1) * sd / sqrt(2), sd of (0.36, 0.40) = 0.02 * sqrt(2); at budget
    # 4 (mean 23%) the same half-width would reach below 0%: the bar stops at 0 (the title says so)
    half = 100 * 12.706205 * 0.02 * 2 ** 0.5 / 2 ** 0.5
    assert list(above) == pytest.approx([half, half], rel=1e-4)
    assert list(below) == pytest.approx([half, 23.0], rel=1e-4)


def test_a_full_cost_run_recorded_without_scoring_keys_is_told_apart_from_cheaper_scoring():
    # Runs recorded before every scoring sampler wrote scoring_scale/precision left them out at
    # full cost; they must not share a legend label with a scoring.scale=0.5 run.
    from sbrun.plots import data, keys, style

    params = {"old": {"selection_forward": "eval"},
              "half": {"selection_forward": "eval", "scoring_scale": 0.5, "scoring_precision": "fp32"},
              "trad": {}}
    rows = [{"run": run, "seed": 0, "epoch": ep, "test_error": 0.1, "sampler": "traditional" if run == "trad" else "sb",
             "beta": None if run == "trad" else 2.0, keys.PARAMS_COLUMN: json.dumps(p)}
            for run, p in params.items() for ep in (1, 2)]
    df = data.prepare(pd.DataFrame(rows))
    labels = style.config_labels(data.configs(df))
    assert len(set(labels.values())) == 3, labels
    by_run = {run: labels[cfg] for run, cfg in df.drop_duplicates("run").set_index("run")["config"].items()}
    assert "scoring_scale=1" in by_run["old"] and "scoring_scale=0.5" in by_run["half"], by_run
    assert "scoring" not in by_run["trad"], by_run


def test_a_runs_csv_with_an_all_empty_scoring_column_loads_under_pandas_3(tmp_path):
    # Read back from runs.csv, a scoring column that no run filled is float64 (all NaN). Filling the
    # full-cost default 'fp32' into it raised TypeError under pandas 3 (pandas 2 upcast with a warning).
    rows = [{"run": run, "seed": 0, "epoch": ep, "test_error": 0.1, "sampler": "sb", "beta": 2.0,
             "selection_forward": "eval", "scoring_precision": None, "scoring_scale": None}
            for run in ("a", "b") for ep in (1, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    back = pd.read_csv(tmp_path / "runs.csv")
    assert back["scoring_precision"].dtype == "float64" and back["scoring_precision"].isna().all()
    df = data.prepare(back)
    assert list(df["scoring_precision"]) == ["fp32"] * 4 and list(df["scoring_scale"]) == [1.0] * 4
    assert data.configs(df)["seeds"].tolist() == [2]      # both runs: one configuration, at full cost

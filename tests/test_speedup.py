"""The speedup table (paper Table 1) and the aggregation under it, on hand-made runs with known answers."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from sbrun.plots import breakdown, data, stats, style, tables, targets

HEADER = ("run,status,dataset,model,sampler,beta,staleness,selectivity,label_noise,seed,batch_size,epochs,lr,"
          "epoch,train_time_s,backprops,test_error\n")


def _rows(run, sampler, beta, staleness, sel, noise, seed, times, errors):
    b = "" if beta is None else beta
    n = "" if staleness is None else staleness
    return "".join(f"{run},finished,toy,cnn,{sampler},{b},{n},{sel},{noise},{seed},128,4,0.1,"
                   f"{e + 1},{t},{100 * (e + 1)},{err}\n" for e, (t, err) in enumerate(zip(times, errors)))


# Per-seed arithmetic (each seed's time where its error, interpolated linearly between evaluations,
# reaches the target): Traditional, seeds 0 and 1, final errors .11/.09 -> baseline error .10;
# targets 1.1x = .11, 1.2x = .12, 1.4x = .14. Seed times: .11 at 38/32 s, .12 at 28/22 s, .14 at
# 18 s and (seed 1 drops .5 -> .12 from 12 to 22 s) 12 + 10 * .36/.38 s.
# SB, seeds 0 and 1 (the baseline's seeds: paired). 1.1x: seed 0 never (.112), seed 1 at 24 s ->
# 1 never reached, speedup 32/24 over seed 1 alone. 1.2x: seed 0 .21 -> .118 from 8 to 12 s, so
# 8 + 4 * .09/.092 s; seed 1 at 18 s. 1.4x: seed 0 at 8 + 4 * .07/.092 s, seed 1 (.19 -> .12 from 12
# to 18 s) at 12 + 6 * .05/.07 s.
# Stale-SB, seed 0 only (unpaired: Welch on the logs, no interval with one seed), errors hitting the
# 1.4x and 1.2x targets exactly: reached at 6 and 8 s, 1.1x at 8 + 2 * .01/.015 s.
# A noisy group without Traditional (no speedups) and one with Traditional only.
CSV = HEADER + (
    _rows("t0", "traditional", None, None, 1.0, 0.0, 0, [8, 18, 28, 38], [0.5, 0.14, 0.12, 0.11])
    + _rows("t1", "traditional", None, None, 1.0, 0.0, 1, [12, 22, 32, 42], [0.5, 0.12, 0.11, 0.09])
    + _rows("s0", "sb", 2.0, 1, 1 / 3, 0.0, 0, [4, 8, 12, 16], [0.5, 0.21, 0.118, 0.112])
    + _rows("s1", "sb", 2.0, 1, 1 / 3, 0.0, 1, [6, 12, 18, 24], [0.5, 0.19, 0.12, 0.11])
    + _rows("st0", "stale_sb", 2.0, 3, 1 / 3, 0.0, 0, [4, 6, 8, 10], [0.5, 0.14, 0.12, 0.105])
    + _rows("n0", "sb", 2.0, 1, 1 / 3, 0.1, 0, [1, 2, 3, 4], [0.5, 0.4, 0.3, 0.2])
    + _rows("n1", "traditional", None, None, 1.0, 0.2, 0, [1, 2, 3, 4], [0.5, 0.4, 0.3, 0.2])
)
T1 = 12.706205   # t_{0.975, 1}: the 95% interval of a two-seed mean is mean ± T1 · s / sqrt(2)


@pytest.fixture
def runs():
    return pd.read_csv(io.StringIO(CSV))


def _row(table, label, noise=0.0):
    hit = table[(table["label"] == label) & (table["label_noise"] == noise)]
    assert len(hit) == 1, f"{label}: {len(hit)} rows in\n{table[['label', 'label_noise']]}"
    return hit.iloc[0]


TRAD = {1.1: (38, 32), 1.2: (28, 22), 1.4: (18, 12 + 10 * 0.36 / 0.38)}
SB = {1.1: (math.nan, 24), 1.2: (8 + 4 * 0.09 / 0.092, 18), 1.4: (8 + 4 * 0.07 / 0.092, 12 + 6 * 0.05 / 0.07)}
STALE = {1.1: 8 + 2 * 0.01 / 0.015, 1.2: 8, 1.4: 6}


def gmean(*xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def at(table, label, k, noise=0.0):
    hit = table[(table["label"] == label) & (table["label_noise"] == noise) & (table["k"] == k)]
    assert len(hit) == 1, f"{label} at {k}: {len(hit)} rows"
    return hit.iloc[0]


def test_speedup_known_answers(runs):
    t = tables.speedup_table(runs, ks=(1.1, 1.2, 1.4))
    assert len(t) == 4 * 3            # long: one row per configuration and target
    labels = ("Traditional (100%)", "SB β=2 (33%)", "Stale-SB n=3 β=2 (33%)")
    trad, sb, stale = (at(t, label, 1.2) for label in labels)
    assert trad["baseline_error"] == pytest.approx(0.10)
    assert trad["baseline_error_ci95"] == pytest.approx(T1 * 0.02 / 2 ** 0.5 / 2 ** 0.5, rel=1e-5)
    # 0.10 ± 0.127: the interval is clipped at 0% error, and the row says so
    assert trad["baseline_error_ci_low"] == 0.0 and trad["baseline_error_ci_clipped"]
    assert trad["seeds"] == 2 and sb["seeds"] == 2 and stale["seeds"] == 1
    assert [at(t, "Traditional (100%)", k)["target"] for k in (1.1, 1.2, 1.4)] == pytest.approx([0.11, 0.12, 0.14])
    assert [at(t, "Traditional (100%)", k)["time"] for k in (1.1, 1.2, 1.4)] == pytest.approx(
        [gmean(*TRAD[k]) for k in (1.1, 1.2, 1.4)])
    assert [at(t, "Traditional (100%)", k)["speedup_gmean"] for k in (1.1, 1.2, 1.4)] == pytest.approx([1, 1, 1])
    assert trad["pairing"] == "baseline" and sb["pairing"] == "paired" and stale["pairing"] == "unpaired"

    # 1.1x: one of two seeds reached it; the ratio, and both times, come from that seed alone
    sb11 = at(t, "SB β=2 (33%)", 1.1)
    assert (sb11["reached"], sb11["not_reached"], sb11["baseline_not_reached"]) == (1, 1, 0)
    assert sb11["time"] == pytest.approx(24) and sb11["baseline_time"] == pytest.approx(32)
    assert sb11["speedup_gmean"] == pytest.approx(32 / 24) and sb11["speedup_n"] == 1
    assert math.isnan(sb11["speedup_ci_low"]) and math.isnan(sb11["speedup_ci_high"])
    # 1.2x: both seeds, paired by seed: geometric mean, t-interval on the log-ratios
    logs = [math.log(TRAD[1.2][i] / SB[1.2][i]) for i in (0, 1)]
    mean, sd = sum(logs) / 2, abs(logs[0] - logs[1]) / 2 ** 0.5
    assert sb["reached"] == 2 and sb["time"] == pytest.approx(gmean(*SB[1.2]))
    assert sb["speedup_gmean"] == pytest.approx(math.exp(mean))
    assert sb["speedup_ci_low"] == pytest.approx(math.exp(mean - T1 * sd / 2 ** 0.5), rel=1e-5)
    assert sb["speedup_ci_high"] == pytest.approx(math.exp(mean + T1 * sd / 2 ** 0.5), rel=1e-5)
    assert sb["speedup_ci_low"] > 0                    # where the old arithmetic interval went below 0
    assert sb["speedup_detectable"] > 1
    assert at(t, "SB β=2 (33%)", 1.4)["speedup_gmean"] == pytest.approx(
        gmean(TRAD[1.4][0] / SB[1.4][0], TRAD[1.4][1] / SB[1.4][1]))
    assert sb["final_error"] == pytest.approx(0.111)

    # Errors exactly at the target count as reached; one seed, not the baseline's: unpaired, against
    # the geometric mean of the baseline's times, with no interval (one value on one side)
    assert [at(t, "Stale-SB n=3 β=2 (33%)", k)["time"] for k in (1.1, 1.2, 1.4)] == pytest.approx(
        [STALE[k] for k in (1.1, 1.2, 1.4)])
    assert [at(t, "Stale-SB n=3 β=2 (33%)", k)["speedup_gmean"] for k in (1.1, 1.2, 1.4)] == pytest.approx(
        [gmean(*TRAD[k]) / STALE[k] for k in (1.1, 1.2, 1.4)])
    assert math.isnan(stale["speedup_ci_low"]) and math.isnan(stale["speedup_detectable"])


def test_a_seed_that_never_reaches_is_counted_not_averaged(runs):
    # Without seed 1, SB never reaches 1.1x; with it, the mean is seed 1's time alone.
    t = tables.speedup_table(runs[runs["run"] != "s1"], ks=(1.1,))
    sb = at(t, "SB β=2 (33%)", 1.1)
    assert sb["reached"] == 0 and sb["not_reached"] == 1 and sb["speedup_n"] == 0
    assert math.isnan(sb["time"]) and math.isnan(sb["speedup_gmean"])
    assert sb["pairing"] == "unpaired"     # seeds {0} are not the baseline's {0, 1}


def test_a_seed_the_baseline_never_reached_leaves_the_pair_and_is_counted(runs):
    # Traditional seed 1 made worse after epoch 2 (.5, .12, .13, .12): the baseline's final error is
    # (.11 + .12) / 2 = .115, which seed 1 never reaches. Target 1.0x = .115: Traditional seed 0 at
    # 28 + 10 * .005/.01 = 33 s; SB seed 0 at 12 + 4 * .003/.006 = 14 s, seed 1 at 18 + 6 * .5 = 21 s.
    worse = runs.copy()
    worse.loc[(worse["run"] == "t1") & (worse["epoch"] >= 3), "test_error"] = [0.13, 0.12]
    t = tables.speedup_table(worse, ks=(1.0,))
    sb = at(t, "SB β=2 (33%)", 1.0)
    assert sb["baseline_not_reached"] == 1 and sb["not_reached"] == 0 and sb["reached"] == 2
    assert sb["speedup_n"] == 1                                   # the one pair both reached: seed 0
    assert sb["time"] == pytest.approx(14) and sb["baseline_time"] == pytest.approx(33)   # that seed's, both
    assert sb["speedup_gmean"] == pytest.approx(33 / 14)
    sb_line = next(line for line in tables.speedup_markdown(t, ks=(1.0,)).splitlines() if line.startswith("| SB"))
    assert sb_line.endswith("| 2.36× (14 vs 33 s; baseline: 1/2 never reached) |")


def test_groups_without_traditional_are_left_out_and_baselines_stay_in_their_group(runs):
    t = tables.speedup_table(runs)
    assert not ((t["label_noise"] == 0.1).any())          # SB at 10% noise has no baseline
    alone = at(t, "Traditional (100%)", 1.1, noise=0.2)    # its own baseline, not the 0% one
    assert alone["baseline_error"] == pytest.approx(0.2)
    assert alone["speedup_gmean"] == pytest.approx(1.0)
    assert t["config"].nunique() == 4


def test_markdown_and_csv(runs, tmp_path):
    paths, md, notes = tables.write_tables(runs, tmp_path)
    assert {p.name for p in paths} == {"speedup.csv", "speedup.md", "results.csv", "results.md"}
    assert notes == []
    sb_line = next(line for line in md.splitlines() if line.startswith("| SB β=2 (33%)"))
    cells = [c.strip() for c in sb_line.strip("|").split("|")]
    # seeds, final error [mean ± T1 · sd/sqrt(2)] in %, pairing, then per target.
    assert cells[1:4] == ["2", "11.10 [9.83, 12.37]", "paired"]
    assert cells[4] == "1.33× (24 vs 32 s; 1/2 never reached)"
    assert cells[5] == "1.69 [0.03, 107.98]× (14.6 vs 24.8 s)"
    stale_line = next(line for line in md.splitlines() if line.startswith("| Stale-SB n=3 β=2 (33%)"))
    assert [c.strip() for c in stale_line.strip("|").split("|")][1:5] == ["1", "10.50", "unpaired",
                                                                            "3.74× (9.33 vs 34.9 s)"]
    assert "Baseline: Traditional (100%), final test error (%) 10.00 [0.00, 22.71]† (2 seeds)" in md
    assert "Targets (k × the baseline's final error): 1.1× = 11.00%, 1.2× = 12.00%, 1.4× = 14.00%." in md
    # one power line per comparison: paired SB at the targets two seeds reached; unpaired Stale-SB none
    power = [line for line in md.splitlines() if line.startswith("- ")]
    assert power[0].startswith("- SB β=2 (33%) vs Traditional (100%): this design (2 seeds) detects a speedup "
                               "in time of ")
    assert power[0].endswith("at the 1.2×/1.4× targets (n = 2/2 seeds) at 80% power.")
    assert power[1] == ("- Stale-SB n=3 β=2 (33%) vs Traditional (100%): unpaired (its seeds are not the "
                        "baseline's), no paired power estimate.")
    back = pd.read_csv(tmp_path / "speedup.csv")
    sb = back[(back["label"] == "SB β=2 (33%)") & (back["k"] == 1.2)].iloc[0]
    assert sb["speedup_gmean"] == pytest.approx(gmean(TRAD[1.2][0] / SB[1.2][0], TRAD[1.2][1] / SB[1.2][1]))
    assert {"speedup_gmean", "speedup_ci_low", "speedup_ci_high", "speedup_n", "not_reached",
            "baseline_not_reached"} <= set(back.columns)
    assert (tmp_path / "speedup.md").read_text() == md
    # SB at 10% noise has no Traditional run: the table says so instead of leaving it out silently
    assert md.rstrip().endswith("No baseline configuration, so no speedups, in: toy / cnn, batch_size=128, "
                                "lr=0.1, epochs=4, label noise 10%.")
    assert "work" not in back.columns    # these runs record no work: no work columns, no note
    res = (tmp_path / "results.md").read_text()
    assert "| SB β=2 (33%) | 0% | 2 | 11.10 [9.83, 12.37] | +1.10 [-10.34, +12.54] |" in res
    assert ("- SB β=2 (33%), 0% noise, vs Traditional (100%): this design (2 seeds) detects a paired "
            "difference of 14.70 points at 80% power.") in res


def test_results_compare_final_errors_with_the_baseline_paired_by_seed(runs):
    r = tables.results_table(runs).set_index(["label", "label_noise"])
    sb = r.loc[("SB β=2 (33%)", 0.0)]
    # seed 0: .112 - .11, seed 1: .11 - .09 -> differences .002 and .02
    diffs = [0.112 - 0.11, 0.11 - 0.09]
    sd = abs(diffs[0] - diffs[1]) / 2 ** 0.5
    assert sb["baseline"] == "Traditional (100%)" and sb["diff_n"] == 2
    assert sb["diff_mean"] == pytest.approx(0.011)
    assert (sb["diff_ci_low"], sb["diff_ci_high"]) == pytest.approx((0.011 - T1 * sd / 2 ** 0.5,
                                                                       0.011 + T1 * sd / 2 ** 0.5), rel=1e-5)
    assert sb["diff_sd"] == pytest.approx(sd)
    assert sb["diff_detectable"] == pytest.approx(stats.detectable_difference(sd, 2))
    stale = r.loc[("Stale-SB n=3 β=2 (33%)", 0.0)]      # seed 0 only: a difference, no interval
    assert stale["diff_n"] == 1 and stale["diff_mean"] == pytest.approx(0.105 - 0.11)
    assert math.isnan(stale["diff_ci_low"]) and math.isnan(stale["diff_detectable"])
    trad = r.loc[("Traditional (100%)", 0.0)]
    assert trad["is_baseline"] and math.isnan(trad["diff_mean"])
    no_base = r.loc[("SB β=2 (33%)", 0.1)]
    assert no_base["baseline"] == "" and no_base["diff_n"] == 0
    # the final error's interval is clipped to [0, 1] and flagged where it left it
    assert trad["final_error_ci_low"] == 0.0 and trad["final_error_ci_clipped"]
    assert not sb["final_error_ci_clipped"]


def test_time_to_target_is_interpolated_between_evaluations():
    # .5 at 1, .2 at 2: .25 is crossed 5/6 of the way, at 1 + 5/6
    assert data.time_to_target([1, 2, 3, 4], [0.5, 0.2, 0.3, 0.1], 0.25) == pytest.approx(1 + 5 / 6)
    assert data.time_to_target([1, 2, 3], [0.5, 0.4, 0.3], 0.3) == 3          # exactly at the target
    assert math.isnan(data.time_to_target([1, 2, 3], [0.5, 0.4, 0.3], 0.29))
    assert data.time_to_target([1, 2], [0.1, 0.05], 0.3) == 1                  # nothing before the first
    # fractional epochs (a compute grid, eval.every): only the evaluations' own x values matter
    assert data.time_to_target([0.5, 1.25, 2.0], [0.4, 0.2, 0.1], 0.3) == pytest.approx(0.875)
    assert data.reach_index([], 0.1) is None and data.reach([], 0.1) is None


def test_mean_curve_averages_seeds_per_epoch_with_a_t_interval(runs):
    c = data.mean_curve(runs, "train_time_s")
    cfg = data.prepare(runs).query("run == 's0'")["config"].iloc[0]
    sb = c[c["config"] == cfg]
    assert list(sb["x"]) == pytest.approx([5, 10, 15, 20])
    assert list(sb["y"]) == pytest.approx([0.5, 0.2, 0.119, 0.111])
    # two seeds a and b: s = |a - b| / sqrt(2), half-width T1 · s / sqrt(2) = T1 · |a - b| / 2
    half = [T1 * d / 2 for d in (0.0, 0.02, 0.002, 0.002)]
    assert list(sb["y_hi"] - sb["y"]) == pytest.approx(half, rel=1e-5, abs=1e-12)
    assert list(sb["y"] - sb["y_lo"]) == pytest.approx(half, rel=1e-5, abs=1e-12)
    assert list(sb["n"]) == [2, 2, 2, 2]
    one = c[c["config"] == data.prepare(runs).query("run == 'st0'")["config"].iloc[0]]
    assert one["y_lo"].isna().all() and one["y_hi"].isna().all()    # one seed: no interval


def test_on_a_compute_grid_seeds_are_aligned_by_evaluation_not_by_fractional_epoch():
    # eval.every=1 (work): both seeds evaluate at work 1, 2, 3, but SB's stochastic selection puts
    # those points at different fractional epochs per seed
    rows = [{"run": f"s{seed}", "status": "finished", "dataset": "toy", "model": "cnn", "sampler": "sb", "beta": 2.0,
             "staleness": 1, "selectivity": 1 / 3, "label_noise": 0.0, "seed": seed, "epoch": ep, "work": w,
             "train_time_s": 10 * w, "test_error": err}
            for seed, epochs, errors in ((0, (1.4, 2.9, 4.3), (0.3, 0.2, 0.1)), (1, (1.6, 3.1, 4.7), (0.5, 0.2, 0.1)))
            for ep, w, err in zip(epochs, (1.0, 2.0, 3.0), errors)]
    c = data.mean_curve(pd.DataFrame(rows), "work")
    assert list(c["x"]) == [1.0, 2.0, 3.0] and list(c["n"]) == [2, 2, 2]
    assert list(c["epoch"]) == pytest.approx([1.5, 3.0, 4.5]) and list(c["y"]) == pytest.approx([0.4, 0.2, 0.1])
    # time to .25 interpolates on the seed's own evaluations: 10 + 10 * .05/.1 and 10 + 10 * .25/.3
    reach = targets.seed_reach(pd.DataFrame(rows), {data.prepare(pd.DataFrame(rows))["group"].iloc[0]: 0.25},
                               ["train_time_s", "work", "epoch"])
    assert list(reach["train_time_s"]) == pytest.approx([15.0, 10 + 10 * 0.25 / 0.3])
    assert list(reach["epoch"]) == pytest.approx([1.4 + 1.5 * 0.5, 1.6 + 1.5 * 0.25 / 0.3])


def test_runs_differing_in_an_unrecorded_override_are_separate_configurations(runs):
    runs["setting"] = ""
    runs.loc[runs["run"] == "s1", "setting"] = "model.width=16"
    cfgs = data.configs(runs)
    sb = cfgs[cfgs["sampler"] == "sb"]
    assert len(sb) == 3 and set(sb["seeds"]) == {1}
    # ... and the width=16 run has no Traditional baseline in its group.
    t = tables.speedup_table(runs)
    assert "model.width=16" not in set(t["setting"])


def test_split_overrides():
    setting, variant = data.split_overrides(["sampler=sb", "seed=3", "beta=2", "model.width=16", "name=x",
                                             "sampler.history=512", "sampler.staleness=2", "+schedule=small",
                                             "data_dir=/d", "label_noise=0.1", "debug=fast"])
    assert setting == "debug=fast model.width=16 schedule=small"
    assert variant == "sampler.history=512"


def test_breakdown_target_falls_back_to_the_loosest_error_all_reach():
    curves = pd.DataFrame({"config": ["a", "a", "b", "b"], "y": [0.5, 0.1, 0.5, 0.3]})
    assert breakdown.common_target(curves, 0.1, 1.2) == (pytest.approx(0.3), "the worst configuration's best error")
    assert breakdown.common_target(curves, 0.25, 1.2)[0] == pytest.approx(0.3)
    assert breakdown.common_target(curves, 0.25, 1.2)[1].startswith("1.2×")
    assert breakdown.common_target(curves, None, 1.2)[0] == pytest.approx(0.3)


def test_breakdown_sums_time_parts_up_to_the_target_epoch():
    df = pd.DataFrame({"run": ["r"] * 3, "sampler": "sb", "seed": 0, "dataset": "toy", "model": "m",
                       "label_noise": 0.0, "epoch": [1, 2, 3], "test_error": [0.5, 0.2, 0.1],
                       "train_time_s": [1, 2, 3], "time_backward_s": [1.0, 2.0, 4.0],
                       "time_select_fwd_s": [0.0, 1.0, 1.0], "time_train_fwd_s": [0.5, 0.5, 0.5],
                       "time_other_s": [0.1, 0.1, 0.1]})
    (target, rule, table), = breakdown.breakdown(df).values()
    assert target == pytest.approx(0.1)     # one configuration: its own best error
    row = table.iloc[0]
    assert row["epoch"] == 3
    assert row["cum_time_backward_s"] == pytest.approx(7.0)
    assert row["cum_time_select_fwd_s"] == pytest.approx(2.0)


@pytest.mark.parametrize("row,label", [
    ({"sampler": "sb", "beta": 2.0, "staleness": 1, "selectivity": 1 / 3}, "SB β=2 (33%)"),
    ({"sampler": "stale_sb", "beta": 2.0, "staleness": 3, "selectivity": 1 / 3}, "Stale-SB n=3 β=2 (33%)"),
    ({"sampler": "traditional", "beta": float("nan"), "staleness": None, "selectivity": 1.0}, "Traditional (100%)"),
    ({"sampler": "kath18", "beta": None, "staleness": None, "selectivity": 1 / 3}, "Kath18 (33%)"),
    ({"sampler": "sb", "beta": 0.5, "staleness": 1, "selectivity": 2 / 3}, "SB β=0.5 (67%)"),
])
def test_legend_labels(row, label):
    assert style.base_label(row) == label

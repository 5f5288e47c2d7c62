"""The speedup table (paper Table 1) and the aggregation under it, on hand-made runs with known answers."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from sbrun.plots import breakdown, data, style, tables

HEADER = ("run,status,dataset,model,sampler,beta,staleness,selectivity,label_noise,seed,batch_size,epochs,lr,"
          "epoch,train_time_s,backprops,test_error\n")


def _rows(run, sampler, beta, staleness, sel, noise, seed, times, errors):
    b = "" if beta is None else beta
    n = "" if staleness is None else staleness
    return "".join(f"{run},finished,toy,cnn,{sampler},{b},{n},{sel},{noise},{seed},128,4,0.1,"
                   f"{e + 1},{t},{100 * (e + 1)},{err}\n" for e, (t, err) in enumerate(zip(times, errors)))


# Per-seed arithmetic (each seed's own first evaluation at or below the target):
# Traditional, seeds 0 and 1, final errors .11/.09 -> baseline error .10; targets 1.1x = .11,
# 1.2x = .12, 1.4x = .14. Seed times: .11 at 38/32 s, .12 at 28/22 s, .14 at 18/22 s.
# SB, seeds 0 and 1 (the baseline's seeds: paired). 1.1x: seed 0 never (.112), seed 1 at 24 s ->
# 1/2 reached, speedup 32/24. 1.2x: 12/18 s -> speedups 28/12 and 22/18. 1.4x: 12/18 s -> 18/12, 22/18.
# Stale-SB, seed 0 only (unpaired: against the baseline's mean time 35/25/20 s), errors hitting the
# 1.4x and 1.2x targets exactly: reached (<= target) at 6 and 8 s, 1.1x at 10 s.
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


def test_speedup_known_answers(runs):
    t = tables.speedup_table(runs, ks=(1.1, 1.2, 1.4))
    trad, sb, stale = _row(t, "Traditional (100%)"), _row(t, "SB β=2 (33%)"), _row(t, "Stale-SB n=3 β=2 (33%)")
    assert trad["baseline_error"] == pytest.approx(0.10)
    assert trad["baseline_error_ci95"] == pytest.approx(T1 * 0.02 / 2 ** 0.5 / 2 ** 0.5, rel=1e-5)
    assert trad["seeds"] == 2 and sb["seeds"] == 2 and stale["seeds"] == 1
    assert [trad[f"target_{k}x"] for k in (1.1, 1.2, 1.4)] == pytest.approx([0.11, 0.12, 0.14])
    assert [trad[f"time_{k}x"] for k in (1.1, 1.2, 1.4)] == pytest.approx([35, 25, 20])
    assert [trad[f"speedup_{k}x"] for k in (1.1, 1.2, 1.4)] == pytest.approx([1, 1, 1])
    assert trad["pairing"] == "baseline" and sb["pairing"] == "paired" and stale["pairing"] == "unpaired"

    # 1.1x: one of two seeds reached it; its time and paired ratio stand alone (n=1, no interval).
    assert sb["reached_1.1x"] == 1 and sb["time_1.1x"] == pytest.approx(24)
    assert sb["speedup_1.1x"] == pytest.approx(32 / 24) and sb["speedup_1.1x_n"] == 1
    assert math.isnan(sb["speedup_1.1x_ci95"])
    # 1.2x: both seeds, paired by seed.
    ratios = [28 / 12, 22 / 18]
    sd = abs(ratios[0] - ratios[1]) / 2 ** 0.5
    assert sb["reached_1.2x"] == 2 and sb["time_1.2x"] == pytest.approx(15)
    assert sb["speedup_1.2x"] == pytest.approx(sum(ratios) / 2)
    assert sb["speedup_1.2x_sd"] == pytest.approx(sd)
    assert sb["speedup_1.2x_ci95"] == pytest.approx(T1 * sd / 2 ** 0.5, rel=1e-5)
    assert sb["speedup_1.4x"] == pytest.approx((18 / 12 + 22 / 18) / 2)
    assert sb["final_error"] == pytest.approx(0.111)

    # Errors exactly at the target count as reached; one seed, not the baseline's: unpaired.
    assert [stale[f"time_{k}x"] for k in (1.1, 1.2, 1.4)] == pytest.approx([10, 8, 6])
    assert [stale[f"speedup_{k}x"] for k in (1.1, 1.2, 1.4)] == pytest.approx([35 / 10, 25 / 8, 20 / 6])


def test_a_seed_that_never_reaches_is_counted_not_averaged(runs):
    # Without seed 1, SB never reaches 1.1x; with it, the mean is seed 1's time alone.
    t = tables.speedup_table(runs[runs["run"] != "s1"], ks=(1.1,))
    sb = _row(t, "SB β=2 (33%)")
    assert sb["reached_1.1x"] == 0 and math.isnan(sb["time_1.1x"]) and math.isnan(sb["speedup_1.1x"])
    assert sb["pairing"] == "unpaired"     # seeds {0} are not the baseline's {0, 1}


def test_groups_without_traditional_are_left_out_and_baselines_stay_in_their_group(runs):
    t = tables.speedup_table(runs)
    assert not ((t["label_noise"] == 0.1).any())          # SB at 10% noise has no baseline
    alone = _row(t, "Traditional (100%)", noise=0.2)       # its own baseline, not the 0% one
    assert alone["baseline_error"] == pytest.approx(0.2)
    assert alone["speedup_1.1x"] == pytest.approx(1.0)
    assert len(t) == 4


def test_markdown_and_csv(runs, tmp_path):
    paths, md, notes = tables.write_tables(runs, tmp_path)
    assert {p.name for p in paths} == {"speedup.csv", "speedup.md", "results.csv", "results.md"}
    assert notes == []
    sb_line = next(line for line in md.splitlines() if line.startswith("| SB β=2 (33%)"))
    cells = [c.strip() for c in sb_line.strip("|").split("|")]
    # seeds, final error ± T1 · sd/sqrt(2) in %, pairing, then per target.
    assert cells[1:4] == ["2", "11.10 ± 1.27", "paired"]
    assert cells[4] == "1.33× (24 s; 1/2 reached)"
    assert cells[5] == "1.78 ± 7.06× (15 ± 38.1 s)"
    stale_line = next(line for line in md.splitlines() if line.startswith("| Stale-SB n=3 β=2 (33%)"))
    assert [c.strip() for c in stale_line.strip("|").split("|")][1:5] == ["1", "10.50", "unpaired", "3.50× (10 s)"]
    assert "Baseline: Traditional (100%), final test error 10.00 ± 12.71% (2 seeds)" in md
    assert "Targets (k × the baseline's final error): 1.1× = 11.00%, 1.2× = 12.00%, 1.4× = 14.00%." in md
    back = pd.read_csv(tmp_path / "speedup.csv")
    sb = back[back["label"] == "SB β=2 (33%)"].iloc[0]
    assert sb["speedup_1.2x"] == pytest.approx((28 / 12 + 22 / 18) / 2) and sb["reached_1.1x"] == 1
    assert (tmp_path / "speedup.md").read_text() == md
    # SB at 10% noise has no Traditional run: the table says so instead of leaving it out silently
    assert md.rstrip().endswith("No baseline configuration, so no speedups, in: toy / cnn, batch_size=128, "
                                "lr=0.1, epochs=4, label noise 10%.")
    assert "work_1.2x" not in back.columns    # these runs record no work: no work columns, no note
    res = (tmp_path / "results.md").read_text()
    assert "| SB β=2 (33%) | 0% | 2 | 11.10 ± 1.27 |" in res


def test_time_to_target_is_the_first_crossing_without_interpolation():
    assert data.time_to_target([1, 2, 3, 4], [0.5, 0.2, 0.3, 0.1], 0.25) == 2
    assert data.time_to_target([1, 2, 3], [0.5, 0.4, 0.3], 0.3) == 3
    assert math.isnan(data.time_to_target([1, 2, 3], [0.5, 0.4, 0.3], 0.29))
    assert data.reach_index([], 0.1) is None


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

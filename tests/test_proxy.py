"""The proxy scorer (scoring.proxy, airbench96_faster) and the sampler=proxy_topk preset."""
import json
import random

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, run_killed, run_sbrun
from sbrun import checkpoint as ckpt
from sbrun import loop
from sbrun.build import build
from sbrun.proxy import multiply_adds

PROXY = ["scoring.proxy.width_factor=0.25"]
# proxy_topk on the tiny data: chunks of 64 (two batches of 32), the top half kept: 8 chunks and
# 256 backprops per epoch; the proxy trains on every 4th chunk's 32 kept examples, 2 per epoch.
PRESET = ["sampler=proxy_topk", "select_batch_size=64"]


def timeless(run_dir):
    df = pd.read_csv(run_dir / "metrics.csv")
    return df.drop(columns=[c for c in df.columns if "time" in c])


def proxy_state(run_dir):
    return ckpt.load(ckpt.latest(run_dir))["ranks"][0]["proxy"]


def test_the_proxy_runs_the_scoring_forward_and_the_main_model_none(tiny_config, tmp_path):
    cfg = tiny_config(*PROXY)
    p = build(cfg, tmp_path, torch.device("cpu"))
    calls = []
    p.model.register_forward_hook(lambda *a: calls.append(1))
    x, y = p.data.train.images[:16].float() / 255, p.data.train.labels[:16]
    losses = loop.score(p, x, y)
    assert not calls                                    # the main model never scored
    p.proxy.model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(p.proxy.model(x), y, reduction="none")
        main = F.cross_entropy(p.model(x), y, reduction="none")
    torch.testing.assert_close(losses, expected)
    assert not torch.allclose(losses, main)             # and it is not the main model's answer


def test_the_proxy_is_the_main_architecture_at_width_factor_and_its_cost_the_multiply_add_ratio(tiny_config):
    # mlp(width w) on 1x8x8 inputs and 4 classes: 64w + w*w + 4w multiply-adds
    cfg = tiny_config(*PROXY)
    p = build(cfg, "unused", torch.device("cpu"))
    assert [m.out_features for m in p.proxy.model if isinstance(m, torch.nn.Linear)] == [8, 8, 4]

    def macs(w):
        return 64 * w + w * w + 4 * w
    assert multiply_adds(p.proxy.model, (1, 8, 8)) == macs(8)
    assert p.proxy.cost == pytest.approx(macs(8) / macs(32))
    assert (p.meter.costs.proxy_select, p.meter.costs.proxy_train) == pytest.approx((p.proxy.cost, 3 * p.proxy.cost))


def test_proxy_weights_change_only_when_it_trains(run_tiny, tiny_config):
    fresh = build(tiny_config(*PROXY), "unused", torch.device("cpu")).proxy     # as built, before training
    # traditional never scores: the proxy is never trained, its weights stay those it was built with
    idle, _ = run_tiny("sampler=traditional", *PROXY)
    for k, v in fresh.model.state_dict().items():
        torch.testing.assert_close(proxy_state(idle)["model"][k], v)
    assert (timeless(idle)["proxy_backprops"] == 0).all()
    # sb scores after its priming epoch, and the proxy trains on every 4th scored chunk's selection
    busy, _ = run_tiny("sampler=sb", *PROXY)
    trained = proxy_state(busy)
    assert trained["scored"] == 2 * 16                  # epochs 2 and 3, 16 chunks of 32 each
    assert any(not torch.equal(trained["model"][k], v) for k, v in fresh.model.state_dict().items())
    m = pd.read_csv(busy / "metrics.csv")
    assert m["proxy_backprops"].iloc[0] == 0 and m["proxy_backprops"].iloc[-1] > 0
    assert (m["time_proxy_fwd_s"].iloc[1:] > 0).all() and (m["time_proxy_bwd_s"].iloc[1:] > 0).all()


def test_the_preset_keeps_a_fixed_count_per_chunk_and_the_work_charge_is_the_stated_formula(run_tiny):
    run, summary = run_tiny(*PRESET)
    m = pd.read_csv(run / "metrics.csv")
    epochs = m["epoch"].to_numpy()
    assert (m["backprops"] == 256 * epochs).all()       # half of every chunk, from the first epoch
    assert (m["steps"] * 32 == m["backprops"]).all()    # every step a full batch: fixed shapes
    assert (m["select_forwards"] == 512 * epochs).all()
    assert (m["proxy_backprops"] == 64 * epochs).all()  # 2 of the 8 chunks per epoch, 32 examples each
    r = summary["effective"]["proxy_cost"]
    assert 0 < r < 0.2
    # (scoring forwards * 1 * r + proxy examples * 3 * r + backprops * 3) / (N * 3), the paper's 1:3
    expected = (m["select_forwards"] * r + m["proxy_backprops"] * 3 * r + m["backprops"] * 3) / (512 * 3)
    assert m["work"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-12)
    assert summary["config"]["sampler"]["name"] == "proxy_topk"
    assert summary["config"]["selection_forward"] == "train"
    assert summary["params"]["scoring_proxy"] == "width_factor=0.25, train_every=4"   # its own configuration


def test_no_proxy_key_leaves_a_run_as_it_was(run_tiny):
    plain, s_plain = run_tiny("sampler=sb")
    cols = pd.read_csv(plain / "metrics.csv").columns
    assert not [c for c in cols if "proxy" in c]
    assert "proxy" not in s_plain["config"]["scoring"] and "proxy_cost" not in s_plain["effective"]
    assert "scoring_proxy" not in s_plain["params"]
    # a proxy that never scores (traditional) draws from its own seed: the run's own random streams,
    # and so its metrics, stay exactly those of the run without it
    a, _ = run_tiny("sampler=traditional")
    b, _ = run_tiny("sampler=traditional", *PROXY)
    pd.testing.assert_frame_equal(timeless(a), timeless(b).drop(columns=["proxy_backprops"]))


@pytest.mark.slow
def test_a_killed_proxy_run_resumes_exactly(tmp_path):
    args = [*TINY, *PRESET, "epochs=4", "deterministic=true", f"out_dir={tmp_path}"]
    ref = run_sbrun(*args, "name=ref")
    assert ref.returncode == 0, ref.stderr
    after = random.Random("proxy").randint(12, 28)     # a step inside epochs 2-4 (8 per epoch)
    killed = run_killed(tmp_path, after, "SIGKILL", *args, "name=job")
    assert killed.returncode == -9
    job = tmp_path / "runs" / "job"
    assert json.loads((job / "summary.json").read_text())["status"] == "running"
    resumed = run_sbrun(f"resume={job}")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(timeless(job), timeless(tmp_path / "runs" / "ref"))
    a, b = proxy_state(job), proxy_state(tmp_path / "runs" / "ref")
    assert a["scored"] == b["scored"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("args, key", [
    (["model=linear", *PROXY], "scoring.proxy.width_factor"),     # a model without a width
    ([*PROXY, "scoring.proxy.model._target_=sbrun.models.linear"], "scoring.proxy.model._target_"),
    (["scoring.proxy.model._target_=sbrun.models.mlp", "+scoring.proxy.model.depth=3"], "scoring.proxy.model.depth"),
    ([*PROXY, "scoring.proxy.train_every=0"], "scoring.proxy.train_every"),
])
def test_a_bad_proxy_is_one_line_naming_its_key(tmp_path, args, key):
    base = [a for a in TINY if not a.startswith("model")]      # the model is the case's own
    res = run_sbrun(*base, *args, f"out_dir={tmp_path}", "name=bad")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and key in res.stderr, res.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_the_bench_bound_of_a_proxy_pays_its_scoring_and_its_training():
    from types import SimpleNamespace as NS

    from sbrun.bench.report import scoring_frame
    from sbrun.samplers.rules import cost_model_speedup

    def parts(proxy):
        return NS(cfg=NS(scoring=NS(scale=1.0)), effective={"scoring_precision": "fp32"}, proxy=proxy)
    scorers = {"fp32": parts(None), "proxy": parts(NS(train_every=4, cost=0.1))}
    variants = {n: NS(samples=[{"frac": f}]) for n, f in (("sb beta=2", 0.3), ("stale_sb n=3", 0.25))}
    costs = {"f_sel": 1e-4, "fb": 3e-4, "fp32": 1e-4, "proxy": 2e-5, "proxy proxy_fb": 8e-5}
    table = scoring_frame(scorers, variants, costs).set_index("option")
    assert table.loc["fp32", "bound_sb2"] == pytest.approx(cost_model_speedup(1e-4, 3e-4, 0.3))
    # scoring 2e-5 per example, plus a proxy step on the selected 30% of every 4th chunk at 8e-5 each
    assert table.loc["proxy", "bound_sb2"] == pytest.approx(3e-4 / (2e-5 + 0.3 * 8e-5 / 4 + 0.3 * 3e-4))
    assert table.loc["proxy", "bound_stale3"] == pytest.approx(3e-4 / ((2e-5 + 0.25 * 8e-5 / 4) / 3 + 0.25 * 3e-4))
    assert table.loc["proxy", "vs_fp32"] == pytest.approx(0.2) and table.loc["proxy", "macs_ratio"] == 0.1


def test_a_measured_costs_file_charges_the_proxy_its_measured_costs_unless_a_ratio_is_given(tiny_config, tmp_path):
    # what `sbrun-bench --proxy F` writes into costs_proxy.json (seconds per example)
    costs = tmp_path / "costs_proxy.json"
    costs.write_text(json.dumps({"f_sel": 2.0, "fb": 6.0, "proxy_f_sel": 0.5, "proxy_fb": 1.5}))
    p = build(tiny_config(*PROXY, f"budget.costs={costs}"), "unused", torch.device("cpu"))
    c = p.meter.costs
    assert (c.select, c.train, c.proxy_select, c.proxy_train) == (2.0, 6.0, 0.5, 1.5)
    assert p.effective["proxy_cost_select"] == 0.5 and p.effective["proxy_cost_train"] == 1.5
    assert p.effective["proxy_cost_from"] == "budget.costs"
    # an explicit scoring.proxy.cost is a ratio of the main model's costs, whatever the file says
    q = build(tiny_config(*PROXY, f"budget.costs={costs}", "scoring.proxy.cost=0.2"), "unused", torch.device("cpu"))
    assert (q.meter.costs.proxy_select, q.meter.costs.proxy_train) == pytest.approx((0.4, 1.2))
    assert q.effective["proxy_cost_from"] == "scoring.proxy.cost"
    # and a run without a proxy ignores the file's proxy costs
    c = build(tiny_config(f"budget.costs={costs}"), "unused", torch.device("cpu")).meter.costs
    assert (c.proxy_select, c.proxy_train) == (None, None)


def test_a_work_budget_charging_the_multiply_add_ratio_says_so_once(tiny_config):
    from sbrun.runner import proxy_note

    p = build(tiny_config(*PROXY, "budget.unit=work", "budget.amount=2"), "unused", torch.device("cpu"))
    assert p.effective["proxy_cost_from"] == "multiply-adds"
    assert "sbrun-bench --proxy" in proxy_note(p) and len(proxy_note(p).splitlines()) == 1
    assert proxy_note(build(tiny_config(*PROXY), "unused", torch.device("cpu"))) is None      # an epochs budget

"""InfoBatch and KAKURENBO: their rules against hand computations, end-to-end runs on digits,
budgets, and exact resume."""
import io
import json
import random

import pandas as pd
import pytest
import torch

from conftest import RESUME_RUN, assert_same_run, run_killed, run_sbrun
from sbrun.samplers import Ctx, Observation, SamplerEnv, rules
from sbrun.samplers.infobatch import InfoBatchConfig
from sbrun.samplers.kakurenbo import KakurenboConfig

CPU = torch.device("cpu")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ctx(idx, epoch=1):
    return Ctx(epoch=epoch, batch=0, progress=0.0, generator=gen(), idx=torch.as_tensor(idx))


def env(n, milestones=()):
    return SamplerEnv(n_train=n, batch_size=4, device=CPU, epochs=10, lr_milestones=list(milestones))


def observe(sampler, idx, losses, correct=None, confidence=None, trained=True):
    idx = torch.as_tensor(idx)
    sampler.observe(Observation(idx, torch.as_tensor(losses, dtype=torch.float32),
                                None if confidence is None else torch.as_tensor(confidence, dtype=torch.float32),
                                None if correct is None else torch.as_tensor(correct, dtype=torch.bool), trained))


def roundtrip(state):
    """Through a checkpoint's serialisation (checkpoints load with weights_only=True)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --- InfoBatch rules -----------------------------------------------------------------------------

def test_well_learned_is_below_the_mean_of_the_seen_scores():
    # finite scores 1, 2, 3, 6: mean 3; 3 itself is not strictly below; the unseen (inf) one never is
    scores = torch.tensor([1.0, 2.0, 3.0, float("inf"), 6.0])
    assert rules.well_learned(scores).tolist() == [True, True, False, False, False]
    assert not rules.well_learned(torch.full((4,), float("inf"))).any()      # nothing seen yet


@pytest.mark.parametrize("prune_ratio, kept, weight", [(0.5, 5, 2.0), (0.3, 7, 1 / 0.7), (0.75, 2, 4.0)])
def test_infobatch_prunes_a_random_share_of_the_well_learned_and_reweights_the_rest(prune_ratio, kept, weight):
    # 10 examples at loss 0.1 and 6 at loss 10: mean 3.8125, so exactly the first 10 are well-learned;
    # int((1 - r) * 10) of them stay, with weight 1/(1 - r)
    scores = torch.tensor([0.1] * 10 + [10.0] * 6)
    visit, w = rules.infobatch_prune(scores, prune_ratio, gen(3))
    assert visit[10:].all() and (w[10:] == 1).all()                  # not well-learned: kept, weight 1
    assert int(visit[:10].sum()) == kept
    assert torch.allclose(w[:10][visit[:10]], torch.tensor(weight))   # kept well-learned: 1/(1-r)
    assert (w[:10][~visit[:10]] == 1).all()                           # pruned ones' weight is never used
    again, _ = rules.infobatch_prune(scores, prune_ratio, gen(3))
    assert torch.equal(visit, again)                                  # the generator decides the draw
    draws = {tuple(rules.infobatch_prune(scores, prune_ratio, gen(s))[0].tolist()) for s in range(8)}
    assert len(draws) > 1                                             # ... and it is random


def test_pruning_stops_after_delta_of_the_run_like_the_reference():
    # Read from the reference: the constructor's reset() makes epoch e (0-based) the (e+1)-th
    # reset, which prunes while e + 1 <= delta * epochs (infobatch.py L174, L180-190)
    for epochs in (8, 10, 200):
        pruning = [e for e in range(epochs) if rules.infobatch_prunes(e, e / epochs, 0.875)]
        assert pruning == [e for e in range(epochs) if e + 1 <= 0.875 * epochs]
    assert [rules.infobatch_prunes(e, e / 200, 0.875) for e in (174, 175)] == [True, False]   # 25 full epochs
    assert [rules.infobatch_prunes(e, e / 10, 0.875) for e in (7, 8)] == [True, False]


# --- InfoBatch sampler ---------------------------------------------------------------------------

def test_infobatch_first_epoch_prunes_nothing_then_prunes_and_weights_the_steps():
    s = InfoBatchConfig(name="infobatch").make(env(16))
    assert s.visit(0, 0.0, gen()) is None                               # every score is +inf
    assert s.select(None, ctx(range(16), epoch=0)).weight is None       # plain mean
    assert s.end_epoch(0) == {"pruned_frac": 0.0, "well_learned_frac": 0.0}
    observe(s, range(16), [0.1] * 10 + [10.0] * 6)
    visit = s.visit(1, 0.25, gen(1))
    assert visit[10:].all() and int((~visit).sum()) == 5                # half of the 10 below the mean
    sel = s.select(None, ctx(torch.arange(16)))
    assert sel.pos is None                                              # every visited example backprops
    expected = torch.where(visit & (torch.arange(16) < 10), 2.0, 1.0)
    assert torch.equal(sel.weight, expected)
    assert s.end_epoch(1) == {"pruned_frac": 5 / 16, "well_learned_frac": 10 / 16}


def test_infobatch_skipped_scores_stay_stale_and_rescoring_is_ignored():
    s = InfoBatchConfig(name="infobatch").make(env(16))
    observe(s, range(16), [0.1] * 10 + [10.0] * 6)
    visit = s.visit(1, 0.25, gen(1))
    seen = visit.nonzero().squeeze(1)
    observe(s, seen, torch.full((seen.numel(),), 5.0))                  # this epoch's training forwards
    observe(s, range(16), torch.full((16,), 99.0), trained=False)       # not a training forward: ignored
    assert torch.equal(s.scores[~visit], torch.full((5,), 0.1))         # pruned: the old score stays
    assert torch.equal(s.scores[visit], torch.full((11,), 5.0))


def test_infobatch_trains_on_everything_after_delta():
    s = InfoBatchConfig(name="infobatch", delta=0.5).make(env(16))
    observe(s, range(16), [0.1] * 10 + [10.0] * 6)
    assert s.visit(4, 0.4, gen()) is not None                            # ends at 0.5: prunes
    assert s.visit(5, 0.5, gen()) is None                                # ends at 0.6
    assert s.select(None, ctx(range(16))).weight is None                 # weights back to 1 (samplers doc)
    assert s.end_epoch(6)["pruned_frac"] == 0.0


def test_infobatch_state_round_trips_mid_epoch():
    a = InfoBatchConfig(name="infobatch").make(env(16))
    observe(a, range(16), torch.linspace(0.0, 3.0, 16))
    a.visit(1, 0.25, gen(5))
    b = InfoBatchConfig(name="infobatch").make(env(16))
    b.load_state_dict(roundtrip(a.state_dict()))
    assert torch.equal(a.select(None, ctx(range(16))).weight, b.select(None, ctx(range(16))).weight)
    assert a.end_epoch(1) == b.end_epoch(1)
    assert torch.equal(a.visit(2, 0.5, gen(6)), b.visit(2, 0.5, gen(6)))


# --- KAKURENBO rules -----------------------------------------------------------------------------

def test_kakurenbo_hides_confident_correct_examples_among_the_lowest_losses():
    loss = torch.tensor([0.5, 0.1, 0.9, 0.2, 0.05, 0.3, 2.0, 0.15, 0.4, 1.0])
    correct = torch.tensor([True, True, True, False, True, True, True, True, True, True])
    conf = torch.tensor([0.9, 0.8, 0.9, 0.9, 0.69, 0.9, 0.9, 0.7, 0.9, 0.9])
    # int(0.45 * 10) = 4 lowest losses: indices 4 (0.05), 1 (0.1), 7 (0.15), 3 (0.2).
    # 4: confidence 0.69 < 0.7 stays; 3: wrong prediction stays; 1 and 7 (0.7 >= tau) are hidden.
    # Index 5 (0.3, confident and correct) is outside the lowest 4 and stays.
    hidden = rules.kakurenbo_hide(loss, correct, conf, 0.45, 0.7)
    assert hidden.nonzero().squeeze(1).tolist() == [1, 7]
    assert not rules.kakurenbo_hide(loss, correct, conf, 0.0, 0.7).any()
    assert rules.kakurenbo_hide(loss, correct, conf, 0.99, 0.0).sum() == 8   # int(9.9) = 9 lowest, 1 wrong


def test_kakurenbo_fraction_steps_down_at_the_drops():
    drops = [10, 20, 30, 40]
    got = [rules.kakurenbo_fraction(0.3, e, drops) for e in (0, 9, 10, 19, 20, 30, 45)]
    assert got == pytest.approx([0.3, 0.3, 0.24, 0.24, 0.18, 0.12, 0.12])    # F, 0.8F, 0.6F, 0.4F
    assert rules.kakurenbo_fraction(0.3, 100, []) == 0.3                      # no drops: F throughout
    assert rules.hidden_lr_factor(0.3) == pytest.approx(1 / 0.7)
    assert rules.hidden_lr_factor(0.0) == 1.0


# --- KAKURENBO sampler ---------------------------------------------------------------------------

LOSS = [0.5, 0.1, 0.9, 0.2, 0.05, 0.3, 2.0, 0.15, 0.4, 1.0]
CORRECT = [True] * 10
CONF = [0.9] * 10


def kakurenbo(n=10, milestones=(), **kw):
    return KakurenboConfig(name="kakurenbo", **kw).make(env(n, milestones))


def test_kakurenbo_hides_nothing_before_every_example_is_seen():
    s = kakurenbo()
    assert s.visit(0, 0.0, gen()) is None and s.lr_factor(0) == 1.0 and s.rescore(0) is None
    observe(s, range(9), LOSS[:9], CORRECT[:9], CONF[:9])                 # example 9 not seen yet
    assert s.visit(1, 0.1, gen()) is None and s.lr_factor(1) == 1.0
    assert s.end_epoch(1) == {"hidden_frac": 0.0, "hide_fraction": 0.0, "lr_factor": 1.0}


def test_kakurenbo_epoch_hides_scales_the_lr_and_rescores_the_hidden():
    s = kakurenbo(fraction=0.3)
    observe(s, range(10), LOSS, CORRECT, CONF)
    visit = s.visit(1, 0.1, gen())
    # int(0.3 * 10) = 3 lowest: 4, 1, 7, all correct and confident
    assert (~visit).nonzero().squeeze(1).tolist() == [1, 4, 7]
    assert s.lr_factor(1) == pytest.approx(1 / 0.7)
    assert s.rescore(1).tolist() == [1, 4, 7]
    assert s.end_epoch(1) == pytest.approx({"hidden_frac": 0.3, "hide_fraction": 0.3, "lr_factor": 1 / 0.7})
    # the re-scoring pass reports example 4 as wrong now and 1 at a high loss: the next epoch hides
    # 7 and the next-lowest confident one (3, loss 0.2)
    observe(s, [1, 4, 7], [5.0, 0.05, 0.15], [True, False, True], [0.9, 0.9, 0.9], trained=False)
    assert (~s.visit(2, 0.2, gen())).nonzero().squeeze(1).tolist() == [3, 7]


def test_kakurenbo_follows_the_lr_drops_or_decay_at():
    s = kakurenbo(n=100, milestones=[2, 4])
    observe(s, range(100), torch.arange(100.0), [True] * 100, [0.9] * 100)
    sizes = []
    for epoch in range(6):
        sizes.append(int((~s.visit(epoch, epoch / 6, gen())).sum()))
        assert s.lr_factor(epoch) == pytest.approx(1 / (1 - sizes[-1] / 100))
    assert sizes == [30, 30, 24, 24, 18, 18]
    by_run = kakurenbo(n=100, milestones=[2, 4], decay_at=[0.5])
    observe(by_run, range(100), torch.arange(100.0), [True] * 100, [0.9] * 100)
    assert [int((~by_run.visit(e, p, gen())).sum()) for e, p in ((3, 0.49), (3, 0.5))] == [30, 24]


def test_kakurenbo_lr_scale_options():
    # 3 of the 3 lowest are candidates, but only 1 is confident: F_e = 0.3, hidden share 0.1
    conf = [0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9]
    factors = {}
    for scale in ("fraction", "hidden", "none"):
        s = kakurenbo(lr_scale=scale)
        observe(s, range(10), LOSS, CORRECT, conf)
        assert (~s.visit(1, 0.1, gen())).nonzero().squeeze(1).tolist() == [7]
        factors[scale] = s.lr_factor(1)
    assert factors == pytest.approx({"fraction": 1 / 0.7, "hidden": 1 / 0.9, "none": 1.0})


def test_kakurenbo_state_round_trips_mid_epoch():
    a = kakurenbo(n=100, milestones=[3])
    observe(a, range(100), torch.rand(100, generator=gen(1)), torch.rand(100, generator=gen(2)) > 0.3,
            torch.rand(100, generator=gen(3)))
    a.visit(3, 0.3, gen())
    b = kakurenbo(n=100, milestones=[3])
    b.load_state_dict(roundtrip(a.state_dict()))
    assert torch.equal(a.rescore(3), b.rescore(3)) and a.lr_factor(3) == b.lr_factor(3)
    assert a.end_epoch(3) == b.end_epoch(3)
    assert torch.equal(a.visit(4, 0.4, gen()), b.visit(4, 0.4, gen()))


# --- End to end ------------------------------------------------------------------------------------

# Small enough for the suite: 16 steps per epoch (the default batch 128 and lr 0.1 leave 4 noisy steps).
DIGITS = ["dataset=digits", "dataset.subset=512", "dataset.test_subset=256", "batch_size=32", "optim.lr=0.05",
          "epochs=4", "plots=false", "progress=off"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["infobatch", "kakurenbo"])
def test_a_pruning_run_on_digits(tmp_path, sampler):
    # flush: each epoch backpropagates exactly what it visits (carry would move leftovers to the next)
    res = run_sbrun(f"sampler={sampler}", *DIGITS, "sampler.epoch_end=flush", f"out_dir={tmp_path}", "name=run")
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(tmp_path / "runs" / "run" / "metrics.csv")
    n = df["examples_seen"].iloc[0]
    assert df["backprop_frac"].iloc[0] == 1.0 and (df["backprop_frac"].iloc[1:3] < 0.95).all()
    fwd = df["select_forwards"].diff().fillna(df["select_forwards"]).to_numpy()
    if sampler == "infobatch":
        # no scoring forwards; every visited example is backpropagated, the pruned ones are not
        # epoch e of 4 prunes while e + 1 <= 0.875 * 4 (the reference): epochs 1 and 2, not 0 or 3
        assert (fwd == 0).all() and (df["pruned_frac"] > 0).tolist() == [False, True, True, False]
        assert (df["backprop_frac"] + df["pruned_frac"]).tolist() == pytest.approx([1.0] * 4)
    else:
        # the hidden examples are re-scored at the epoch's end, counted as selection forwards
        hidden = (df["hidden_frac"] * n).round().to_numpy()
        assert (hidden[1:] > 0).all() and (fwd == hidden).all()
        assert (df["backprop_frac"] + df["hidden_frac"]).tolist() == pytest.approx([1.0] * 4)
        base = df["lr"].iloc[0]
        assert df["lr"].tolist() == pytest.approx((base * df["lr_factor"]).tolist())
        assert df["lr_factor"].iloc[1:].tolist() == pytest.approx([1 / 0.7] * 3)
    # it learns: 10 classes (chance 0.1), and digits reaches > 0.9 in a few epochs
    assert df["test_acc"].max() > 0.85
    assert df["train_loss"].iloc[-1] < 0.5 * df["train_loss"].iloc[0]


@pytest.mark.parametrize("sampler", ["infobatch", "kakurenbo"])
def test_a_work_budget_buys_more_epochs_when_examples_are_pruned(run_tiny, sampler):
    # InfoBatch prunes only epochs that end within delta of the run; at 2 units its second epoch
    # would end at the budget, so delta=1 lets it prune there
    extra = ["sampler.delta=1.0"] if sampler == "infobatch" else []
    run_dir, summary = run_tiny(f"sampler={sampler}", "budget.unit=work", "budget.amount=2", *extra)
    df = pd.read_csv(run_dir / "metrics.csv")
    # Epoch 1 costs 1 Traditional epoch; pruned epochs cost less, so 2 units reach into epoch 3.
    assert df["epoch"].iloc[-1] == 3 and df["budget_frac"].iloc[-1] == pytest.approx(1.0)
    assert 2.0 <= df["work"].iloc[-1] < 2.0 + 32 / 512 + 1e-9      # stopped within one step of the budget
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("ref")
    for sampler in ("infobatch", "kakurenbo"):
        res = run_sbrun(*RESUME_RUN, f"sampler={sampler}", f"out_dir={base}", f"name={sampler}")
        assert res.returncode == 0, res.stderr
    return base / "runs"


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["infobatch", "kakurenbo"])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted, sampler):
    # A seeded step inside epochs 3-4, where both prune (about 52 and 56 steps in all).
    after = random.Random(sampler).randint(30, 50)
    killed = run_killed(tmp_path, after, "SIGKILL", *RESUME_RUN, f"sampler={sampler}", f"out_dir={tmp_path}",
                        "name=job")
    assert killed.returncode == -9
    run = tmp_path / "runs" / "job"
    assert 1 <= len(pd.read_csv(run / "metrics.csv")) < 4
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, uninterrupted / sampler)


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    # A mid-epoch checkpoint (epoch 3) holds the epoch's visit mask, the sampler's hidden set (re-scored
    # at the epoch's end, after the resume) and its lr factor. InfoBatch's mid-epoch state, its loss
    # weights, is covered by test_infobatch_state_round_trips_mid_epoch.
    sampler = "kakurenbo"
    killed = run_killed(tmp_path, 40, "SIGTERM", *RESUME_RUN, f"sampler={sampler}", f"out_dir={tmp_path}", "name=job")
    assert killed.returncode == 3, killed.stderr
    run = tmp_path / "runs" / "job"
    resumed = run_sbrun(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, uninterrupted / sampler)

"""The selection math against brute-force references and its statistical properties."""
import math

import pytest
import torch

from sbrun.samplers import rules, sb_probabilities
from sbrun.selection import LossHistory


def brute_sb_probabilities(losses, history, beta, min_prob=0.0):
    out = []
    for loss in losses.tolist():
        below = sum(1 for h in history.tolist() if h < loss)
        out.append(max(min_prob, (below / len(history)) ** beta))
    return torch.tensor(out)


@pytest.mark.parametrize("beta,min_prob", [(1.0, 0.0), (2.0, 0.0), (3.0, 0.05), (0.5, 0.2)])
def test_sb_probabilities_match_brute_force(beta, min_prob):
    g = torch.Generator().manual_seed(0)
    history = torch.rand(300, generator=g) * 5
    losses = torch.cat([history[-40:], torch.rand(10, generator=g) * 6])  # in-history and new values
    history = torch.cat([history, losses[-10:]])
    got = sb_probabilities(losses, history, beta, min_prob)
    want = brute_sb_probabilities(losses, history, beta, min_prob)
    assert torch.allclose(got, want, atol=1e-6)


def test_percentile_counts_strictly_lower_entries_with_ties():
    history = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0])
    got = rules.loss_percentiles(torch.tensor([1.0, 2.0, 3.0, 0.5, 9.0]), history)
    assert got.tolist() == pytest.approx([0.0, 0.4, 0.8, 0.0, 1.0])


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_mean_selectivity_on_a_stationary_stream(beta):
    """Stream i.i.d. losses through the ring buffer exactly as SB does; the kept fraction must be
    1/(1+beta) within 0.03. 200 batches of 128 give a standard error near 0.002, so 0.03 leaves
    room only for the percentile's small finite-window bias (about 1/R)."""
    g = torch.Generator().manual_seed(1)
    hist = LossHistory(1024, torch.device("cpu"))
    kept = total = 0
    for _ in range(200):
        losses = torch.empty(128).exponential_(generator=g)
        hist.append(losses)
        keep = rules.bernoulli_keep(sb_probabilities(losses, hist.window(), beta), g)
        kept += int(keep.sum())
        total += 128
    assert abs(kept / total - 1 / (1 + beta)) < 0.03


def test_higher_losses_are_chosen_more_often():
    g = torch.Generator().manual_seed(2)
    hist = LossHistory(1024, torch.device("cpu"))
    chosen = torch.zeros(4)
    for _ in range(300):
        # Four loss levels per batch; selections per level must increase with the loss.
        losses = torch.tensor([0.1, 0.5, 1.0, 3.0]).repeat(32) + torch.rand(128, generator=g) * 0.01
        hist.append(losses)
        keep = rules.bernoulli_keep(sb_probabilities(losses, hist.window(), 2.0), g)
        chosen += keep.view(32, 4).sum(0).float()
    assert chosen[0] < chosen[1] < chosen[2] < chosen[3]
    assert chosen[3] > 5 * chosen[1]


def test_ring_buffer_keeps_the_most_recent_values():
    hist = LossHistory(5, torch.device("cpu"))
    hist.append(torch.arange(3.0))
    assert sorted(hist.window().tolist()) == [0.0, 1.0, 2.0]
    hist.append(torch.arange(3.0, 7.0))
    assert sorted(hist.window().tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    hist.append(torch.arange(10.0, 20.0))          # more than the window at once
    assert sorted(hist.window().tolist()) == [15.0, 16.0, 17.0, 18.0, 19.0]


def test_bernoulli_is_deterministic_for_a_seed():
    p = torch.full((1000,), 0.3)
    a = rules.bernoulli_keep(p, torch.Generator().manual_seed(5))
    b = rules.bernoulli_keep(p, torch.Generator().manual_seed(5))
    c = rules.bernoulli_keep(p, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cost_model_speedup():
    # f_sel = 1, f+b = 3, s = 1/3: SB costs 1 + 1 = 2 per example vs 3 -> 1.5x; Stale-SB n=3: 3/(1/3+1).
    assert rules.cost_model_speedup(1.0, 3.0, 1 / 3) == pytest.approx(1.5)
    assert rules.cost_model_speedup(1.0, 3.0, 1 / 3, staleness=3) == pytest.approx(2.25)
    assert rules.expected_fraction(2.0) == pytest.approx(1 / 3)
    assert math.isclose(rules.tau_threshold(384, 128), 2.0)

"""RS2's without-replacement subset schedule, against the reference's rule as read from its code
(PatrikOkanovic/RS2, DeepCore methods/uniform_no_replacement.py L15-31), and end to end."""
import pandas as pd
import pytest
import torch

from sbrun.config import ConfigError
from sbrun.samplers import SamplerEnv, rules
from sbrun.samplers.rs2 import RS2Config


def make(n, fraction, seed=0):
    return RS2Config(fraction=fraction).make(SamplerEnv(n_train=n, batch_size=4, device=torch.device("cpu"), seed=seed))


def test_windows_follow_the_reference_state_machine():
    # Read from the reference: reset -> [0, size); then start = end, end = (end + size) mod (n + 1);
    # a new permutation once end == n or the last window wrapped (end < start).
    assert [rules.rs2_window(e, 12, 4) for e in range(5)] == [(0, 0, 4), (0, 4, 8), (0, 8, 12), (1, 0, 4), (1, 4, 8)]
    # 10 examples, 4 per epoch: the third window wraps: 8, 9 and then the head up to 1 (3 examples)
    assert [rules.rs2_window(e, 10, 4) for e in range(4)] == [(0, 0, 4), (0, 4, 8), (0, 8, 1), (1, 0, 4)]


def test_every_example_exactly_once_per_pass_when_the_size_divides_n():
    s = make(12, 1 / 3)
    for first in (0, 3, 6):                                  # three passes of three epochs
        seen = torch.cat([s.subset(e) for e in range(first, first + 3)])
        assert sorted(seen.tolist()) == list(range(12))
    assert not torch.equal(s.subset(0), s.subset(3))         # each pass draws a new permutation


def test_a_wrapping_window_repeats_the_head_of_the_same_permutation():
    s = make(10, 0.4)                                        # round(0.4 * 10) = 4
    a, b, c = (s.subset(e) for e in range(3))
    assert len(a) == len(b) == 4 and len(c) == 3             # the reference's (end + size) mod (n + 1)
    assert sorted(torch.cat([a, b, c[:2]]).tolist()) == list(range(10))   # one pass covers all 10
    assert c[2] == a[0]                                      # then the permutation's head again


def test_the_schedule_is_a_function_of_seed_and_epoch():
    a, b, other = make(50, 0.3), make(50, 0.3), make(50, 0.3, seed=1)
    for e in (0, 4, 7):
        assert torch.equal(a.visit(e, 0.0, None), b.visit(e, 0.0, None))    # a resumed run: same subset
    assert not torch.equal(a.subset(0), other.subset(0))


def test_fraction_defaults_to_sbs_rate_and_is_checked():
    assert RS2Config(beta=2.0).kept == pytest.approx(1 / 3) == make(99, None).size / 99
    with pytest.raises(ConfigError, match="sampler.fraction"):
        RS2Config(fraction=1.5)


def test_an_rs2_run_backprops_each_subset_once(run_tiny):
    run_dir, summary = run_tiny("sampler=rs2", "sampler.fraction=0.25", "epochs=4")
    df = pd.read_csv(run_dir / "metrics.csv")
    assert (df["backprop_frac"] == 0.25).all() and (df["select_forwards"] == 0).all()
    counts = pd.read_csv(run_dir / "selection_counts.csv")
    assert (counts["backprops"] == 1).all()                 # 4 epochs x 1/4: the whole set, once each

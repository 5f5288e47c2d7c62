"""Label noise and the learning-rate schedule: pure functions with exact answers."""
import pytest
import torch

from sbrun.data import corrupt_labels
from sbrun.schedule import multistep_lr


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.2, 0.55])
def test_uniform_noise_flips_exactly_round_rN_labels_never_to_the_true_class(rate):
    labels = torch.randint(0, 10, (1001,), generator=torch.Generator().manual_seed(0))
    noisy, mask = corrupt_labels(labels, 10, rate, seed=3)
    assert int(mask.sum()) == round(rate * 1001)
    assert torch.equal(noisy != labels, mask)               # mask marks exactly the changed labels
    assert torch.all(noisy[mask] != labels[mask])
    assert torch.equal(noisy[~mask], labels[~mask])
    assert noisy.min() >= 0 and noisy.max() < 10


def test_noise_is_deterministic_by_seed_and_covers_the_other_classes():
    labels = torch.zeros(5000, dtype=torch.long)
    a, ma = corrupt_labels(labels, 4, 0.3, seed=1)
    b, mb = corrupt_labels(labels, 4, 0.3, seed=1)
    c, mc = corrupt_labels(labels, 4, 0.3, seed=2)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(ma, mc)
    counts = torch.bincount(a[ma], minlength=4)
    assert counts[0] == 0
    # 1500 flips over 3 classes: each ~500, sd ~18; 100 is > 5 sd.
    assert all(abs(int(n) - 500) < 100 for n in counts[1:])


def test_permute_mode_keeps_the_class_balance():
    labels = torch.arange(10).repeat(100)
    noisy, mask = corrupt_labels(labels, 10, 0.2, seed=0, mode="permute")
    assert torch.equal(torch.bincount(noisy, minlength=10), torch.bincount(labels, minlength=10))
    assert 0 < int(mask.sum()) <= 200
    assert torch.equal(noisy != labels, mask)


def test_multistep_lr_by_position():
    ms, base = [60, 120, 160], 0.1
    assert multistep_lr(0, base, ms, 0.2) == pytest.approx(0.1)
    assert multistep_lr(59.99, base, ms, 0.2) == pytest.approx(0.1)
    assert multistep_lr(60, base, ms, 0.2) == pytest.approx(0.02)
    assert multistep_lr(130.5, base, ms, 0.2) == pytest.approx(0.004)
    assert multistep_lr(500, base, ms, 0.2) == pytest.approx(0.1 * 0.2 ** 3)
    assert multistep_lr(10, base, [], 0.2) == pytest.approx(0.1)


def test_schedule_modes_in_a_run(run_tiny):
    """by=epochs drops the lr at the epoch milestone; by=backprops drops it only once the
    backpropagated examples add up to that many epochs' worth (later, since SB skips most)."""
    import pandas as pd

    common = ("sampler=sb", "epochs=6", "schedule.milestones=[2]", "schedule.gamma=0.1")
    d1, _ = run_tiny(*common, "schedule.by=epochs")
    d2, _ = run_tiny(*common, "schedule.by=backprops")
    by_epoch = pd.read_csv(d1 / "metrics.csv")
    by_bp = pd.read_csv(d2 / "metrics.csv")
    # Row lr is the lr in force at the end of the epoch; epochs are 0-based positions.
    assert by_epoch["lr"].tolist() == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.005, 0.005])
    n, b = 512, 32
    dropped = by_bp.index[by_bp["lr"] < 0.01]
    assert len(dropped) and by_bp["lr"].iloc[-1] == pytest.approx(0.005)
    r = dropped[0]
    assert r > 2                                   # SB backprops a third: 2 epochs' worth come later
    assert by_bp["backprops"].iloc[r] >= 2 * n     # the drop needs 2N backprops before a step...
    assert by_bp["backprops"].iloc[r - 1] <= 2 * n + b   # ...and had not happened one step past 2N

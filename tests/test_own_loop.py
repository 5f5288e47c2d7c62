"""Selection in any training loop: sbrun.SelectiveBackprop / TopK / RandomKeep / KeptBatches, and
the runnable example scripts/examples/own_loop.py."""
from __future__ import annotations

import importlib.util
import io
import math
import os
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
import torch

import sbrun
from sbrun.samplers import rules

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "scripts" / "examples" / "own_loop.py"


def drifting_stream(seed: int, batches: int = 60):
    """Batches of varying size (one larger than the window below) whose loss level drifts up and
    down; losses are rounded to 0.05 so that ties occur."""
    g = torch.Generator().manual_seed(seed)
    for b in range(batches):
        n = 100 if b == 30 else int(torch.randint(1, 40, (1,), generator=g))
        level = 2.0 + math.sin(b / 6) + b / 30
        yield (level + torch.rand(n, generator=g)).mul(20).round().div(20)


def reference(stream, beta: float, history: int, min_prob: float, seed: int):
    """SB written out plainly: the window is a deque of the last `history` losses; each batch is
    appended first, then P = max(min_prob, (#window < loss / len)^beta), keep if U < P."""
    window, g = deque(maxlen=history), torch.Generator().manual_seed(seed)
    for losses in stream:
        window.extend(losses.tolist())
        u = torch.rand(len(losses), generator=g).tolist()      # the same draws as bernoulli_keep
        probs = [max(min_prob, (sum(w < v for w in window) / len(window)) ** beta) for v in losses.tolist()]
        yield [ui < p for ui, p in zip(u, probs)], probs


@pytest.mark.parametrize("beta,min_prob", [(1.0, 0.0), (2.5, 0.1)])
def test_select_equals_a_plain_reference_on_a_drifting_stream(beta, min_prob):
    sel = sbrun.SelectiveBackprop(beta=beta, history=64, min_prob=min_prob,
                                  generator=torch.Generator().manual_seed(7))
    want = reference(drifting_stream(3), beta, 64, min_prob, seed=7)
    # Two selectors on one stream: `probabilities` must give the P that `select` draws against.
    probe = sbrun.SelectiveBackprop(beta=beta, history=64, min_prob=min_prob)
    kept = total = 0
    for losses, (ref_mask, ref_probs) in zip(drifting_stream(3), want):
        mask = sel.select(losses.view(-1, 1))                     # any shape: flattened
        assert mask.dtype == torch.bool and mask.shape == (len(losses),)
        assert mask.tolist() == ref_mask
        assert torch.allclose(probe.probabilities(losses), torch.tensor(ref_probs), atol=1e-6)
        kept, total = kept + int(mask.sum()), total + len(losses)
    assert 0 < kept < total               # the comparison covered kept and dropped examples


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_kept_fraction_on_stationary_losses(beta):
    """I.i.d. losses: once the window is full, a loss's count of strictly smaller window entries is
    uniform on 0..R-1 (its own batch is in the window), so E[P] = mean_j (j/R)^beta, which is
    1/(1+beta) - 1/(2R) + O(1/R^2) (R = 1024: a bias of 0.0005). We test against that exact mean
    with 4.5 binomial standard errors (N = 25600: SE 0.0029 at beta = 2). The draws are not quite
    independent (one batch's ranks are distinct, windows overlap); over 150 seeds the fraction's
    standard deviation measured 0.86, 0.77 and 0.82 times the binomial SE at beta = 1, 2, 3."""
    R, B, batches = 1024, 128, 200
    g = torch.Generator().manual_seed(11)
    sel = sbrun.SelectiveBackprop(beta=beta, history=R, generator=torch.Generator().manual_seed(12))
    for _ in range(R // B):                                        # fill the window first
        sel.probabilities(torch.empty(B).exponential_(generator=g))
    kept = sum(int(sel.select(torch.empty(B).exponential_(generator=g)).sum()) for _ in range(batches))
    exact = sum((j / R) ** beta for j in range(R)) / R
    assert 0 < 1 / (1 + beta) - exact <= 1 / (2 * R)
    n = B * batches
    assert abs(kept / n - exact) < 4.5 * math.sqrt(exact * (1 - exact) / n)


def test_higher_losses_are_kept_more_often():
    g = torch.Generator().manual_seed(5)
    sel = sbrun.SelectiveBackprop(beta=2.0, generator=torch.Generator().manual_seed(6))
    chosen = torch.zeros(4)
    for _ in range(100):
        losses = torch.tensor([0.1, 0.5, 1.0, 3.0]).repeat(32) + torch.rand(128, generator=g) * 0.01
        chosen += sel.select(losses).view(32, 4).sum(0).float()
    assert chosen[0] < chosen[1] < chosen[2] < chosen[3]


def test_observed_fills_the_window_and_the_mask_is_for_losses():
    sel = sbrun.SelectiveBackprop(beta=1.0)
    observed = torch.tensor([0.0, 1.5, 2.5, 10.0])
    probs = sel.probabilities(torch.tensor([1.0, 2.0, 3.0]), observed=observed)
    assert probs.tolist() == pytest.approx([0.25, 0.5, 0.75])      # against observed alone
    assert sorted(sel.window().tolist()) == observed.tolist()
    assert sel.select(torch.tensor([5.0, 0.1]), observed=torch.tensor([1.0])).shape == (2,)
    assert len(sel.window()) == 5


def test_gathered_losses_make_percentiles_global():
    """Two "ranks" passing every rank's losses as observed= get what one process would get."""
    g = torch.Generator().manual_seed(9)
    single = sbrun.SelectiveBackprop(beta=2.0, history=100)
    ranks = [sbrun.SelectiveBackprop(beta=2.0, history=100) for _ in range(2)]
    for _ in range(10):
        parts = [torch.rand(16, generator=g), torch.rand(9, generator=g)]
        gathered = torch.cat(parts)
        want = single.probabilities(gathered)
        got = torch.cat([r.probabilities(p, observed=gathered) for r, p in zip(ranks, parts)])
        assert torch.equal(got, want)


def test_empty_window_is_one_clear_error():
    with pytest.raises(ValueError, match="window is empty"):
        sbrun.SelectiveBackprop().select(torch.ones(3), observed=torch.empty(0))


@pytest.mark.parametrize("make,bad", [
    (lambda: sbrun.SelectiveBackprop(beta=0.0), "beta=0.0"),
    (lambda: sbrun.SelectiveBackprop(history=0), "history=0"),
    (lambda: sbrun.SelectiveBackprop(min_prob=1.5), "min_prob=1.5"),
    (lambda: sbrun.TopK(keep=0.0), "keep=0.0"),
    (lambda: sbrun.RandomKeep(prob=2.0), "prob=2.0"),
    (lambda: sbrun.KeptBatches(batch_size=0), "batch_size=0"),
])
def test_bad_arguments_are_one_line(make, bad):
    with pytest.raises(ValueError) as err:
        make()
    assert bad in str(err.value) and "allowed" in str(err.value) and "\n" not in str(err.value)


def _stream_masks(sel, seed, batches=15):
    g = torch.Generator().manual_seed(seed)
    return [sel.select(torch.rand(50, generator=g)) for _ in range(batches)]


@pytest.mark.parametrize("make", [
    lambda seed: sbrun.SelectiveBackprop(beta=2.0, history=128, generator=torch.Generator().manual_seed(seed)),
    lambda seed: sbrun.RandomKeep(prob=0.4, generator=torch.Generator().manual_seed(seed)),
])
def test_state_dict_round_trip_gives_identical_masks(make):
    a = make(1)
    _stream_masks(a, seed=20)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)                                # through a real checkpoint
    b = make(99)                                                   # other seed: the state must win
    _stream_masks(b, seed=30)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    after_a, after_b = _stream_masks(a, seed=21), _stream_masks(b, seed=21)
    assert all(torch.equal(x, y) for x, y in zip(after_a, after_b))
    assert not all(torch.equal(x, y) for x, y in zip(after_a, _stream_masks(make(1), seed=21)))


def test_state_of_another_window_size_is_refused():
    state = sbrun.SelectiveBackprop(history=64).state_dict()
    with pytest.raises(ValueError, match="history=32"):
        sbrun.SelectiveBackprop(history=32).load_state_dict(state)


@pytest.mark.parametrize("n,keep,k", [(100, 0.33, 33), (10, 0.5, 5), (2, 0.33, 1)])
def test_topk_keeps_the_highest_losses(n, keep, k):
    losses = torch.randperm(n, generator=torch.Generator().manual_seed(n)).float()
    mask = sbrun.TopK(keep=keep).select(losses)
    assert int(mask.sum()) == k == rules.kept_count(n, keep)       # int(keep*N), at least one
    assert set(losses[mask].tolist()) == set(range(n - k, n))


def test_random_keep_fraction():
    """Independent draws: 20000 examples at p = 0.3 give SE = sqrt(0.21/20000) = 0.0032; 4.5 SE."""
    sel = sbrun.RandomKeep(prob=0.3, generator=torch.Generator().manual_seed(4))
    kept = sum(int(sel.select(torch.zeros(200)).sum()) for _ in range(100))
    assert abs(kept / 20000 - 0.3) < 4.5 * math.sqrt(0.21 / 20000)


def _adds(batcher, sizes, index=True, start=0):
    """Add batches of consecutive examples i: x = (i, -i), y = 10 i, index = i. Returns the next i."""
    for n in sizes:
        i = torch.arange(start, start + n)
        batcher.add(torch.stack([i.float(), -i.float()], 1), i * 10, index=i if index else None)
        start += n
    return start


def test_kept_batches_yield_full_batches_in_order_until_flush():
    batcher = sbrun.KeptBatches(batch_size=8)
    seen, added = [], 0
    for sizes in ([3, 0, 4], [13], [2, 1]):                         # 7, 20, 23 examples in all
        added = _adds(batcher, sizes, start=added)
        seen += list(batcher.full())
        assert sum(len(b[0]) for b in seen) + len(batcher) == added  # nothing lost or repeated
    assert [len(b[0]) for b in seen] == [8, 8] and len(batcher) == 7
    rest = batcher.flush()
    assert len(rest[0]) == 7 and batcher.flush() is None and len(batcher) == 0
    x, y, idx = (torch.cat(c) for c in zip(*seen, rest))
    assert idx.tolist() == list(range(23))                          # order kept
    assert torch.equal(x[:, 0].long(), idx) and torch.equal(x[:, 1].long(), -idx) and torch.equal(y, idx * 10)


def test_kept_batches_without_index_yield_pairs():
    batcher = sbrun.KeptBatches(batch_size=4)
    _adds(batcher, [6], index=False)
    (xb, yb), = batcher.full()
    assert torch.equal(yb, torch.arange(4) * 10) and torch.equal(xb[:, 0], torch.arange(4.0))
    xr, yr = batcher.flush()
    assert yr.tolist() == [40, 50]
    with pytest.raises(ValueError, match="index"):
        batcher.add(xr, yr, index=torch.arange(2))                 # index on some adds only
    with pytest.raises(ValueError, match="equal length"):
        batcher.add(xr, yr[:1])


def test_kept_batches_state_round_trip():
    a = sbrun.KeptBatches(batch_size=8)
    _adds(a, [5, 6])
    list(a.full())                                                  # 3 examples wait
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = sbrun.KeptBatches(batch_size=8)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert len(b) == 3
    x, y, idx = b.flush()
    assert idx.tolist() == [8, 9, 10] and y.tolist() == [80, 90, 100]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_selection_never_syncs_with_the_host_on_cuda():
    dev = torch.device("cuda")
    sb = sbrun.SelectiveBackprop(beta=2.0, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    rk = sbrun.RandomKeep(0.3, generator=torch.Generator(device=dev).manual_seed(1))
    topk, batcher = sbrun.TopK(0.3), sbrun.KeptBatches(batch_size=64)
    losses, x = torch.rand(128, device=dev), torch.rand(128, 3, device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")        # any host sync below raises
    try:
        for _ in range(3):
            sb.select(losses)
            sb.select(losses, observed=torch.cat([losses, losses]))
            topk.select(losses), rk.select(losses)
            batcher.add(x, losses, index=torch.arange(128, device=dev))
            assert len(list(batcher.full())) == 2
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_import_sbrun_is_light():
    """`import sbrun` alone imports no torch (sbrun-plot stays quick); the selection API brings
    torch but none of hydra, matplotlib, pandas or torchvision."""
    code = ("import sys, sbrun; bare = 'torch' in sys.modules; sbrun.SelectiveBackprop; "
            "heavy = {'hydra', 'matplotlib', 'pandas', 'torchvision'} & set(sys.modules); "
            "print(bare, 'torch' in sys.modules, sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.split() == ["False", "True", "[]"]


# --- the example script -------------------------------------------------------------------------

def write_idx(path: Path, data: torch.Tensor) -> None:
    """MNIST's idx format: magic 0x0000 08 <ndim> (uint8 data), big-endian int32 sizes, raw bytes."""
    header = struct.pack(">I", 0x0800 + data.dim()) + struct.pack(f">{data.dim()}I", *data.shape)
    path.write_bytes(header + data.to(torch.uint8).contiguous().numpy().tobytes())


def tiny_mnist(root: Path, n_train: int = 512, n_test: int = 128) -> None:
    """Learnable 28x28 digits: each class is a faint square at its own place, in strong noise (an
    easier set drives every loss to exactly 0.0 in float32 within an epoch; ties at 0 are never
    strictly below anything, so SB would then keep nothing)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.rand(n, 28, 28, generator=g) * 120
        for k in range(10):
            r, c = 2 + 8 * (k // 3), 2 + 8 * (k % 3)
            x[y == k, r:r + 6, c:c + 6] += 60
        write_idx(raw / f"{split}-images-idx3-ubyte", x.clamp(0, 255))
        write_idx(raw / f"{split}-labels-idx1-ubyte", y)


@pytest.mark.slow          # about 6 s on 2 shared cores, most of it starting Python with torch
def test_example_script_runs_end_to_end(tmp_path):
    tiny_mnist(tmp_path)
    files = sorted(tmp_path.rglob("*"))
    res = subprocess.run([sys.executable, str(EXAMPLE), "--data-dir", str(tmp_path), "--epochs", "2",
                          "--batch-size", "32", "--beta", "1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "(priming)" in lines[0]
    fractions = [float(line.split("backprop fraction")[1].split()[0]) for line in lines]
    accuracies = [float(line.split("test accuracy")[1].split()[0]) for line in lines]
    assert fractions[0] == 1.0 and 0 < fractions[1] < 1
    assert all(0 <= a <= 1 for a in accuracies)
    assert sorted(tmp_path.rglob("*")) == files                     # it wrote nothing


def test_example_script_missing_data_is_one_line(tmp_path):
    spec = importlib.util.spec_from_file_location("own_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_:
        example.main(["--data-dir", str(tmp_path)])
    message = str(exit_.value.code)                  # SystemExit(str): printed to stderr, status 1
    assert "\n" not in message and f"{tmp_path}/MNIST/raw" in message

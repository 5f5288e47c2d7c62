"""The device-resident data path and the vectorised selection against straightforward references."""
from collections import deque

import pytest
import torch

from sbrun.config import DatasetConfig
from sbrun.data import ImageSet, augment
from sbrun.data.stream import Augmenter, LoaderStream, TensorStream
from sbrun.samplers import rules
from sbrun.seeding import generator
from sbrun.selection import LossHistory

CPU = torch.device("cpu")


def toy_set(n=300, c=3, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g))


def plain_cfg(**kw):
    return DatasetConfig(name="synthetic", channels=3, image_size=8, mean=[0.5] * 3, std=[0.25] * 3, **kw)


def test_tensor_stream_batches_equal_a_reference_gather():
    data = toy_set()
    stream = TensorStream(data, plain_cfg(), seed=7, device=CPU)
    stream.start_epoch(2)
    chunks = list(stream.chunks(64))
    perm = torch.randperm(300, generator=generator(CPU, 7, "order", 2))
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 44]
    assert torch.equal(torch.cat([c.idx for c in chunks]), perm)
    aug = Augmenter(plain_cfg(), CPU)
    for c, ref_idx in zip(chunks, perm.split(64)):
        x, y = c.images()
        assert torch.equal(y, data.labels[ref_idx])
        assert torch.allclose(x, aug.test(data.images[ref_idx]))
        pos = torch.tensor([3, 0, 5])
        xs, ys = c.images(pos)
        assert torch.equal(ys, data.labels[ref_idx[pos]])
        assert torch.allclose(xs, aug.test(data.images[ref_idx[pos]]))


def test_loader_path_yields_the_same_batches_as_the_tensor_path():
    data = toy_set()
    tensor = TensorStream(data, plain_cfg(), seed=3, device=CPU)
    loader = LoaderStream(data, plain_cfg(), seed=3, device=CPU, num_workers=0)
    for s in (tensor, loader):
        s.start_epoch(1)
    for a, b in zip(tensor.chunks(50), loader.chunks(50)):
        assert torch.equal(a.idx, b.idx)
        xa, ya = a.images()
        xb, yb = b.images()
        assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_shards_are_respected():
    data = toy_set()
    shard = torch.arange(1, 300, 3)
    stream = TensorStream(data, plain_cfg(), seed=0, device=CPU, shard=shard)
    stream.start_epoch(0)
    seen = torch.cat([c.idx for c in stream.chunks(32)])
    assert torch.equal(seen.sort().values, shard)


def test_random_crop_matches_a_per_example_reference():
    x = toy_set(20).images
    out = augment.random_crop(x, 2, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    dy = torch.randint(0, 5, (20,), generator=g)
    dx = torch.randint(0, 5, (20,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(20):
        ref = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], ref)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_flip_matches_a_per_example_reference():
    x = toy_set(30).images
    out = augment.random_flip(x, torch.Generator().manual_seed(2))
    flips = torch.rand(30, generator=torch.Generator().manual_seed(2)) < 0.5
    for i in range(30):
        assert torch.equal(out[i], x[i].flip(2) if flips[i] else x[i])
    assert 5 < int(flips.sum()) < 25


def test_cutout_matches_a_per_example_reference():
    x = torch.randn(25, 3, 10, 10)
    out = augment.cutout(x, 4, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    cy = torch.randint(0, 10, (25,), generator=g)
    cx = torch.randint(0, 10, (25,), generator=g)
    for i in range(25):
        ref = x[i].clone()
        y0, x0 = max(0, int(cy[i]) - 2), max(0, int(cx[i]) - 2)
        ref[:, y0:min(10, int(cy[i]) + 2), x0:min(10, int(cx[i]) + 2)] = 0
        assert torch.equal(out[i], ref)


def test_augmentations_preserve_shape_dtype_and_range():
    data = toy_set(64)
    cfg = plain_cfg(crop_padding=2, flip=True, cutout=4)
    aug = Augmenter(cfg, CPU)
    x = aug.train(data.images, torch.Generator().manual_seed(0))
    assert x.shape == data.images.shape and x.dtype == torch.float32
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
    assert torch.isfinite(x).all()
    # Crop with zero padding only adds zeros: every output pixel is a pixel of the same input
    # image (same channel) or 0, and with padding 2 on 8x8 images most of each image survives.
    cropped = augment.random_crop(data.images, 2, torch.Generator().manual_seed(0))
    assert cropped.dtype == torch.uint8 and cropped.shape == data.images.shape
    for src, out in zip(data.images, cropped):
        for c in range(src.shape[0]):
            allowed = set(src[c].flatten().tolist()) | {0}
            assert set(out[c].flatten().tolist()) <= allowed
        assert (out != 0).sum() >= (6 * 6 * src.shape[0]) * 0.5


def reference_sb(stream, beta, history, seed):
    """SB's selection written the straightforward way: a deque and per-example Python loops."""
    window = deque(maxlen=history)
    g = torch.Generator().manual_seed(seed)
    decisions = []
    for losses in stream:
        window.extend(losses.tolist())
        u = torch.rand(len(losses), generator=g)
        keep = []
        for loss, ui in zip(losses.tolist(), u.tolist()):
            pct = sum(1 for h in window if h < loss) / len(window)
            keep.append(ui < pct ** beta)
        decisions.append(torch.tensor(keep))
    return decisions


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_vectorised_selection_equals_the_reference(beta):
    g = torch.Generator().manual_seed(9)
    stream = [torch.rand(48, generator=g) * (1 + i % 3) for i in range(30)]   # drifting losses
    ref = reference_sb(stream, beta, history=100, seed=4)
    hist = LossHistory(100, CPU)
    gen = torch.Generator().manual_seed(4)
    for losses, want in zip(stream, ref):
        hist.append(losses)
        keep = rules.bernoulli_keep(rules.sb_probabilities(losses, hist.window(), beta), gen)
        assert torch.equal(keep, want)

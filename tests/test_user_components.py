"""Bring your own model and data: a model class from a file in the current directory, images
from an .npz, from an image folder and from a user's dataset class, end to end through `sbrun`."""
import json
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_sbrun, sbrun_cli

FAST = ["epochs=2", "progress=off", "batch_size=32", "optim.lr=0.05", "loss_snapshots=1"]


def blobs(n, classes=3, size=12, seed=0):
    """Colour-coded images: class c lights channel c (easy to learn, so a run must learn them)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, :, c] += 180
    return x, y


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A current directory holding a user's package with a model and a dataset class."""
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent('''
        import torch.nn as nn

        class TinyNet(nn.Module):
            def __init__(self, num_classes, in_channels, image_size, hidden=16):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden),
                                          nn.ReLU(), nn.Linear(hidden, num_classes))

            def forward(self, x):
                return self.body(x)

        class Picky(nn.Module):
            def __init__(self, num_classes, blocks):
                super().__init__()
                raise ValueError(f"blocks must be even, got {blocks}")
        '''))
    (pkg / "data.py").write_text(textwrap.dedent('''
        import numpy as np

        def blobs(n_train=240, seed=0):
            rng = np.random.default_rng(seed)
            def make(n):
                y = rng.integers(0, 3, n)
                x = rng.integers(0, 60, (n, 12, 12, 3)).astype(np.uint8)
                for i, c in enumerate(y):
                    x[i, :, :, c] += 180
                return x, y
            (xa, ya), (xb, yb) = make(n_train), make(90)
            return {"x_train": xa, "y_train": ya, "x_test": xb, "y_test": yb}
        '''))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
        monkeypatch.delitem(sys.modules, name)      # a previous test's package, from its own folder
    return tmp_path


def finished(run):
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished", s.get("reason")
    return s


def test_a_model_from_the_current_directory_trains_through_the_console_script(workdir):
    res = sbrun_cli("model._target_=my_pkg.nets.TinyNet", "+model.hidden=24", *FAST, "out_dir=out", "name=m",
                    cwd=workdir)
    assert res.returncode == 0, res.stderr
    s = finished(workdir / "out" / "runs" / "m")
    assert s["params"]["model"] == "TinyNet" and s["config"]["model"] == {
        "_target_": "my_pkg.nets.TinyNet", "name": "TinyNet", "hidden": 24}        # no cnn keys inherited
    assert s["effective"]["channels_last"] is False                              # no Conv2d in it
    assert s["final_test_acc"] > 0.5
    assert (workdir / "out" / "runs" / "m" / "figures" / "time_to_accuracy.png").exists()


@pytest.mark.parametrize("args,words", [
    (["model._target_=my_pkg.nets.Nope"], ["model._target_", "cannot be imported"]),
    (["model._target_=my_pkg.nets.TinyNet", "+model.depth=3"], ["model.depth", "allowed: hidden"]),
    (["model._target_=my_pkg.nets.Picky", "+model.blocks=3"], ["model._target_", "rejected", "blocks must be even"]),
    (["model._target_=torch.nn.Identity"], ["outputs (2, 1, 8, 8)", "(2, 10)"]),
])
def test_a_model_that_cannot_serve_is_one_line_before_training(workdir, args, words):
    res = run_sbrun(*args, *FAST, "out_dir=out")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not (workdir / "out").exists()


def test_images_from_an_npz_with_label_noise_and_figures(workdir):
    (xa, ya), (xb, yb) = blobs(300), blobs(90, seed=1)
    np.savez("blobs.npz", x_train=xa, y_train=ya, x_test=xb, y_test=yb)
    res = run_sbrun("dataset=arrays", "dataset.path=blobs.npz", "label_noise=0.2", "dataset.flip=true", *FAST,
                    "out_dir=out", "name=a")
    assert res.returncode == 0, res.stderr
    run = workdir / "out" / "runs" / "a"
    s = finished(run)
    assert s["dataset_meta"]["channels"] == 3 and s["dataset_meta"]["num_classes"] == 3
    assert s["dataset_meta"]["mean"][0] == pytest.approx(xa[..., 0].mean() / 255, rel=1e-6)
    assert s["noisy_examples"] == 60 and s["final_test_acc"] > 0.5
    counts = pd.read_csv(run / "selection_counts.csv")
    assert len(counts) == 300 and counts["noisy"].sum() == 60
    extremes = np.load(run / "extremes.npz")
    assert extremes["most_images"].shape[1:] == (3, 12, 12)
    assert {p.name for p in (run / "figures").iterdir()} >= {"time_to_accuracy.png", "selected_images.png"}


def test_an_image_folder_is_decoded_once_and_trains(workdir):
    from PIL import Image

    for split, (x, y) in {"train": blobs(150), "test": blobs(60, seed=1)}.items():
        for i, (img, label) in enumerate(zip(x, y)):
            d = workdir / "imgs" / split / f"c{label}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    args = ["dataset=folder", "dataset.path=imgs", "dataset.image_size=8", "model=mlp", "model.width=32", *FAST,
            "out_dir=out"]
    res = run_sbrun(*args, "name=f")
    assert res.returncode == 0, res.stderr
    s = finished(workdir / "out" / "runs" / "f")
    assert s["dataset_meta"]["image_size"] == 8 and s["n_train"] == 150 and s["final_test_acc"] > 0.5
    assert any((workdir / "imgs" / ".sbrun-cache").iterdir())         # decoded once, cached beside it
    again = run_sbrun(*args, "name=g", "seed=1")
    assert again.returncode == 0, again.stderr


def test_a_users_dataset_class_by_target(workdir):
    res = run_sbrun("dataset._target_=my_pkg.data.blobs", "+dataset.n_train=210", *FAST, "out_dir=out", "name=d")
    assert res.returncode == 0, res.stderr
    s = finished(workdir / "out" / "runs" / "d")
    # nothing inherited from the default digits recipe: the shape comes from the data
    assert s["n_train"] == 210 and s["dataset_meta"]["channels"] == 3 and s["params"]["dataset"] == "blobs"


def test_bad_user_data_is_one_line_and_leaves_nothing(workdir):
    (xa, ya), (xb, yb) = blobs(50), blobs(20)
    np.savez("bad.npz", x_train=xa, y_train=ya[:40], x_test=xb, y_test=yb)
    res = run_sbrun("dataset=arrays", "dataset.path=bad.npz", *FAST, "out_dir=out")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "bad.npz" in res.stderr
    assert not (workdir / "out").exists()


def test_the_runner_and_the_public_rule_choose_the_same_examples():
    """sbrun.SelectiveBackprop in a user's loop and sampler=sb in the runner: one rule, one window."""
    import sbrun
    from sbrun.samplers import Ctx, SamplerEnv
    from sbrun.samplers.sb import SBConfig

    runner = SBConfig(beta=2.0).make(SamplerEnv(n_train=10_000, batch_size=64, device=torch.device("cpu")))
    mine = sbrun.SelectiveBackprop(beta=2.0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    stream = torch.Generator().manual_seed(0)
    for b in range(40):
        losses = torch.rand(64, generator=stream) * (1 + b % 4)
        ctx = Ctx(epoch=1, batch=b, progress=0.5, generator=g, idx=torch.arange(64))
        picked = runner.select(losses, ctx).pos
        assert torch.equal(picked, mine.select(losses).nonzero().squeeze(1))


PROBE = '''
import torch, torch.nn as nn

SEEN = {"train": set(), "eval": set()}

class Probe(nn.Module):
    """Records, per mode, whether each forward ran under CPU bf16 autocast."""
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        if x.shape[0] != 2:     # not sbrun's two-image check of the output shape
            SEEN["train" if self.training else "eval"].add(torch.is_autocast_enabled("cpu"))
        assert x.is_contiguous(memory_format=torch.channels_last)
        return self.head(self.conv(x).mean((2, 3)))
'''


@pytest.mark.parametrize("args,train_bf16,eval_bf16", [
    (["precision=bf16"], {True}, {True}),
    (["scoring.precision=bf16"], {False}, {True, False}),     # scoring in bf16, evaluation in fp32
    ([], {False}, {False}),
])
def test_bf16_and_channels_last_run_on_the_cpu(workdir, monkeypatch, args, train_bf16, eval_bf16):
    (workdir / "my_pkg" / "probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(workdir))
    import importlib

    import my_pkg.probe as probe
    importlib.reload(probe)
    res = run_sbrun("model._target_=my_pkg.probe.Probe", "sampler=sb", "epochs=2", "dataset.subset=256",
                    "plots=false", *args, "out_dir=out")
    assert res.returncode == 0, res.stderr
    assert probe.SEEN["train"] == train_bf16 and probe.SEEN["eval"] == eval_bf16

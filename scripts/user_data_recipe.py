"""Does the recipe of `dataset=folder` / `dataset=arrays` learn on a small user data set?

Writes a 120-image, 3-class, 32x32 RGB data set (sbrun's seeded synthetic prototypes) as an image
folder and as an .npz, trains each with the shipped recipe and with the paper's GPU lr 0.1, and
writes every epoch's training loss and test accuracy to OUT/losses.csv.

    python scripts/user_data_recipe.py --out results/user_data_recipe --epochs 8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def make_arrays(n_train: int = 120, n_test: int = 30, classes: int = 3, size: int = 32) -> dict:
    from sbrun.data.builtin import synthetic

    data = synthetic(num_classes=classes, channels=3, image_size=size, n_train=n_train, n_test=n_test)
    hwc = lambda s: s.images.permute(0, 2, 3, 1).numpy()   # noqa: E731
    return {"x_train": hwc(data.train), "y_train": data.train.labels.numpy(),
            "x_test": hwc(data.test), "y_test": data.test.labels.numpy()}


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def write_folder(root: Path, arrays: dict) -> Path:
    """DIR/train/<class>/<i>.png and DIR/test/<class>/<i>.png."""
    from PIL import Image

    for split in ("train", "test"):
        for i, (x, y) in enumerate(zip(arrays[f"x_{split}"], arrays[f"y_{split}"])):
            d = root / split / f"c{int(y)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(d / f"{i:04d}.png")
    return root


def run(data_args, lr, epochs: int, out_dir: Path, name: str) -> pd.DataFrame:
    args = [*data_args, f"epochs={epochs}", "plots=false", "progress=off", f"out_dir={out_dir}", f"name={name}"]
    args += [f"optim.lr={lr}"] if lr is not None else []
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "sbrun", *args], capture_output=True, text=True, env=env)
    if res.returncode not in (0, 1):
        raise SystemExit(res.stderr)
    df = pd.read_csv(out_dir / "runs" / name / "metrics.csv")[["epoch", "train_loss", "test_acc"]]
    df["warned"] = "may be diverging" in res.stdout
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/user_data_recipe", help="folder for losses.csv")
    ap.add_argument("--epochs", type=int, default=8, help="epochs per run")
    opts = ap.parse_args()
    out = Path(opts.out)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arrays = make_arrays()
        data = {"folder": ["dataset=folder", f"dataset.path={write_folder(tmp / 'imgs', arrays)}"],
                "arrays": ["dataset=arrays", f"dataset.path={write_npz(tmp / 'data.npz', arrays)}"]}
        for kind, args in data.items():
            for lr in (None, 0.1):
                df = run(args, lr, opts.epochs, tmp / "runs", f"{kind}_{lr}")
                frames.append(df.assign(data=kind, lr="recipe (0.02)" if lr is None else str(lr)))
    table = pd.concat(frames)[["data", "lr", "epoch", "train_loss", "test_acc", "warned"]]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "losses.csv", index=False)
    print(table.to_string(index=False))
    print(json.dumps({"written": str(out / "losses.csv")}))


if __name__ == "__main__":
    main()

"""A generated image folder in ImageFolder layout, for tests, benchmarks and trying storage options
without a download:

    python -m sbrun.data.make_folder DIR --train 20000 --test 2000 --size 64 --classes 10
    python -m sbrun.data.make_folder DIR --split val --size 256 --vary 0.5    # ImageNet-shaped

Each class is a learnable pattern (a class-specific stripe orientation and colour) under
per-image noise, saved as JPEG (or PNG). `--vary F` draws each image's width and height from
[size, size * (1 + F)], as photos are; `--split` names the evaluation folder (test or val).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def class_image(label: int, classes: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [h, w, 3]: stripes at the class's angle, in the class's colour, plus noise."""
    angle = math.pi * label / classes
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(12 * (xx * math.cos(angle) + yy * math.sin(angle)) * math.pi + phase)
    hue = np.array([math.cos(angle), math.cos(angle + 2.1), math.cos(angle + 4.2)]) * 0.4 + 0.5
    img = stripes[..., None] * hue[None, None] + rng.normal(0, 0.15, (h, w, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_image_folder(root: Path, n_train: int, n_test: int, size: int = 32, classes: int = 4, seed: int = 0,
                      split: str = "test", vary: float = 0.0, fmt: str = "jpg") -> Path:
    """Write root/train/<class>/*.{fmt} and root/<split>/<class>/*.{fmt}; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for name, n in (("train", n_train), (split, n_test)):
        for i in range(n):
            label = i % classes
            h, w = (int(size * (1 + rng.uniform(0, vary))) for _ in range(2))
            d = root / name / f"class{label:03d}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(class_image(label, classes, h, w, rng)).save(d / f"{i:07d}.{fmt}", quality=90)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sbrun.data.make_folder", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--vary", type=float, default=0.0)
    ap.add_argument("--format", dest="fmt", default="jpg", choices=["jpg", "png"])
    a = ap.parse_args(argv)
    if a.root.exists() and any(a.root.iterdir()):
        ap.error(f"{a.root} is not empty; allowed: a new or empty folder")
    make_image_folder(a.root, a.train, a.test, a.size, a.classes, a.seed, a.split, a.vary, a.fmt)
    print(f"written: {a.root} ({a.train} train, {a.test} {a.split} images of {a.size} px)")


if __name__ == "__main__":
    main()

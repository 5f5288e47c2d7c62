"""`sbrun-bench`: how close SB and Stale-SB come to their cost-model speedup.

The command line (`sbrun-bench`, `python -m sbrun.bench`): a preset and extra overrides in, the
benchmark's files out (see the package's docstring, sbrun/bench/__init__.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Tuple

import torch

from ..config import ConfigError
from ..data import DataError
from .rounds import SCORING, Options, run_bench

PRESETS = {
    # Real MNIST from --data-dir on a CPU, with the small CNN.
    "cpu": ["dataset=mnist", "model=cnn", "model.width=16", "dataset.subset=12800"],
    # CIFAR-shaped data with crop+flip+cutout and ResNet-18 in bf16, channels_last, as on the paper's GPUs.
    "gpu": ["dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "dataset.num_classes=10",
            "dataset.n_train=50000", "dataset.n_test=1000", "dataset.mean=[0.5,0.5,0.5]",
            "dataset.std=[0.25,0.25,0.25]", "dataset.crop_padding=4", "dataset.flip=true",
            "dataset.cutout=16", "model=resnet18", "precision=bf16", "channels_last=true"],
    # Seconds: checks that the bench works end to end (CI, gpu_check.sh on a CPU); the numbers mean nothing.
    "smoke": ["dataset=synthetic", "model=cnn", "model.width=8", "dataset.n_train=512", "dataset.n_test=64",
              "batch_size=32"],
}


def parse_scoring(text: str) -> Tuple[str, ...]:
    if text == "all":
        return tuple(SCORING)
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",")))
    bad = [n for n in names if n not in SCORING]
    if bad:
        raise argparse.ArgumentTypeError(f"{','.join(bad)} is invalid; allowed: all, none, or a comma list of "
                                          f"{', '.join(SCORING)}")
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="sbrun-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="extra sbrun overrides, e.g. device=cuda dataset.subset=20000")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="cpu: real MNIST (needs it under --data-dir: DIR/MNIST/raw) + small CNN; gpu: CIFAR-shaped "
                        "synthetic data + ResNet-18, bf16; smoke: a seconds-long check that the bench works, offline "
                        "(default: gpu with CUDA, else cpu)")
    p.add_argument("--data-dir", default=os.environ.get("SBRUN_DATA_DIR", "data"),
                   help="where datasets are read (sbrun's data_dir; the cpu preset needs MNIST there; default "
                        "$SBRUN_DATA_DIR, else ./data)")
    p.add_argument("--repeats", type=_positive(int), default=3, help="interleaved rounds (default 3)")
    p.add_argument("--cost-reps", type=_positive(int), default=20,
                   help="timed batches for f_sel and f+b (default 20)")
    p.add_argument("--loader-workers", type=_positive(int, zero=True), default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the loader-path rows (num_workers; default min(8, CPU cores))")
    p.add_argument("--scoring", type=parse_scoring, default=tuple(SCORING),
                   help=f"scoring options to measure: all (default), none, or a comma list of {', '.join(SCORING)}")
    p.add_argument("--scoring-scale", type=float, default=0.5, help="scoring.scale of the scale options (default 0.5)")
    p.add_argument("--proxy", type=float, default=None, metavar="F",
                   help="also measure a proxy scorer at scoring.proxy.width_factor=F (a scoring table row)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds after which no new round starts (the tables hold the rounds done)")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="folder for bench.csv, bench.md, scoring.csv and costs.json (default results/bench)")
    args = p.parse_args(argv)
    if not 0.0 < args.scoring_scale <= 1.0:
        p.error(f"--scoring-scale={args.scoring_scale} is invalid; allowed: a number in (0, 1]")
    if args.proxy is not None and not args.proxy > 0:
        p.error(f"--proxy={args.proxy} is invalid; allowed: a width factor > 0")
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    base = PRESETS[preset] + [f"data_dir={args.data_dir}"] + args.overrides
    opts = Options(repeats=args.repeats, cost_reps=args.cost_reps, loader_workers=args.loader_workers,
                   scoring=args.scoring, scale=args.scoring_scale, proxy=args.proxy, time_limit_s=args.time_limit,
                   preset=preset)
    try:
        tables = run_bench(base, opts, args.out)
    except (ConfigError, DataError) as err:
        print(f"sbrun-bench: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print()
    print((args.out / "bench.md").read_text())
    options = list(tables["scoring"]["option"]) if not tables["scoring"].empty else []
    written = ["bench.csv", "bench.md", "costs.json"] + (["scoring.csv"] if not tables["scoring"].empty else [])
    print(f"written in {args.out}: " + ", ".join(written + [f"costs_{o}.json" for o in options]))


def _positive(kind, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text} is invalid; allowed: an integer >= {0 if zero else 1}")
        return value
    return parse

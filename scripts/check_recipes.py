#!/usr/bin/env python
"""Check that every shipped CPU recipe learns: each recipe x label_noise {0, 0.2} x sampler.

    python scripts/check_recipes.py                          # offline recipes only (< 2 min on 2 cores)
    python scripts/check_recipes.py --data-dir ../shared/data  # plus the MNIST recipes (< 10 min)

Each recipe runs as one `python -m sbrun --multirun` over its samplers and both noise levels, with
this interpreter, for its first few epochs, into a temporary directory (nothing is written into
the repository). The recipe's own learning settings (model, lr, schedule, batch size, sampler
keys) are never changed; the check only sets `epochs` below the recipe's own (before the small
schedule's first milestone, 15) and, for real MNIST, trains on a fixed `dataset.subset` and evaluates on a
`dataset.test_subset` to stay within minutes.

A run passes when its test accuracy reaches the recipe's `floor` at every epoch from `from_epoch`
on: a recipe that learns and then collapses (the Kath18 demo fell from 98% to 29% in epoch 4)
fails as surely as one that never learns. Exit 0 when every run passes, 1 otherwise, with one line
per failing run naming the recipe, sampler, noise and accuracy. Recipes whose data is missing are
skipped, and say so.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

NOISE = (0.0, 0.2)
# Samplers of the paper's comparison, and the cheap controls.
MAIN = ("traditional", "sb", "stale_sb", "kath18")
ALL = MAIN + ("random", "topk", "composer", "infobatch", "kakurenbo")
# Real MNIST is shortened to this many training / test examples (a fixed, seeded subset).
MNIST_SUBSET = 5000
MNIST_TEST_SUBSET = 2000


@dataclass
class Recipe:
    name: str
    overrides: List[str]        # the recipe itself, as a user types it
    samplers: Sequence[str]
    epochs: int                 # epochs run by the check
    floor: Tuple[float, float]  # test accuracy required at label_noise 0 and 0.2 ...
    from_epoch: int = 2         # ... at every epoch from this one (1-based) on
    dataset: str = "digits"     # needs data: mnist, fashion_mnist
    shorten: List[str] = field(default_factory=list)   # operational shortening for the check


def recipes() -> List[Recipe]:
    """Chance is 10% for the 10-class sets and 25% for synthetic (4 classes); every floor sits far
    above it, and below the dips that selection itself causes on these tiny sets (SB's single-seed
    dips to 68% on digits and Kath18's first importance-sampled epoch at 73% on the MNIST subset
    are the methods, not a broken recipe). Epoch 1 is not checked: it is the
    priming epoch of most samplers. The demo runs 8 epochs so that Kath18's variable start (epoch 4
    to 6 on digits) and two Stale-SB cached epochs are exercised. RHO trains on one pool in
    pool_factor (10): its epochs take a tenth of the steps, so it gets 15 epochs, checked from the
    12th (about 1.2 Traditional epochs of backprops). The subset-2000 floor at 20% noise is low on
    purpose: SB there backpropagates mostly mislabeled examples after a 16-step priming epoch, the
    method's known weakness with noisy labels, which no recipe setting should hide."""
    mnist_short = [f"dataset.subset={MNIST_SUBSET}", f"dataset.test_subset={MNIST_TEST_SUBSET}"]
    return [
        Recipe("demo (digits, cnn)", [], ALL, epochs=8, floor=(0.6, 0.5)),
        Recipe("demo, sampler=rho", [], ("rho",), epochs=15, floor=(0.6, 0.5), from_epoch=12),
        Recipe("debug=fast", ["debug=fast"], ALL, epochs=2, floor=(0.8, 0.6)),
        Recipe("dataset=synthetic", ["dataset=synthetic"], ALL, epochs=5, floor=(0.65, 0.5)),
        Recipe("dataset=mnist", ["dataset=mnist"], MAIN, epochs=3, floor=(0.65, 0.6),
               dataset="mnist", shorten=mnist_short),
        Recipe("dataset=mnist dataset.subset=2000", ["dataset=mnist", "dataset.subset=2000"], MAIN,
               epochs=3, floor=(0.7, 0.3), dataset="mnist",
               shorten=[f"dataset.test_subset={MNIST_TEST_SUBSET}"]),
        # Not measured here (no FashionMNIST on this machine): the MNIST recipe shape, lower floors.
        Recipe("dataset=fashion_mnist", ["dataset=fashion_mnist"], MAIN, epochs=3, floor=(0.5, 0.4),
               dataset="fashion_mnist", shorten=mnist_short),
        Recipe("experiment=mini_mnist", ["experiment=mini_mnist"], MAIN, epochs=3, floor=(0.65, 0.6),
               dataset="mnist", shorten=mnist_short),
    ]


RAW = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}


def missing_data(recipe: Recipe, data_dir: Optional[Path]) -> Optional[str]:
    """Why the recipe's data is unavailable, or None."""
    if recipe.dataset not in RAW:
        return None
    if data_dir is None:
        return "no --data-dir given"
    raw = data_dir / RAW[recipe.dataset]
    if not raw.is_dir() or not any(raw.iterdir()):
        return f"{raw} is missing"
    return None


def command(recipe: Recipe, out_dir: Path, data_dir: Optional[Path], tag: str, seed: int,
            extra: Sequence[str] = ()) -> List[str]:
    cmd = [sys.executable, "-m", "sbrun", "--multirun", *recipe.overrides, *recipe.shorten, f"seed={seed}",
           f"sampler={','.join(recipe.samplers)}", f"label_noise={','.join(str(n) for n in NOISE)}",
           f"epochs={recipe.epochs}", f"out_dir={out_dir}", f"name={tag}",
           "progress=off", "plots=false", "checkpoint.enabled=false", *extra]
    if data_dir is not None:
        cmd.append(f"data_dir={data_dir}")
    return cmd


def test_accs(run_dir: Path) -> List[float]:
    """Test accuracy per epoch from metrics.csv (empty if the run wrote none)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [float(row["test_acc"]) for row in csv.DictReader(f)]


def collect(sweep_dir: Path) -> Dict[Tuple[str, float], dict]:
    """(sampler, label_noise) -> {"status", "accs", "reason"} for every job of a sweep."""
    out = {}
    for summary_path in sorted(sweep_dir.rglob("summary.json")):
        s = json.loads(summary_path.read_text())
        cfg = s.get("config", {})
        key = (cfg.get("sampler", {}).get("name"), float(cfg.get("label_noise", -1)))
        out[key] = {"status": s.get("status"), "accs": test_accs(summary_path.parent),
                    "reason": s.get("reason")}
    return out


def verdict(recipe: Recipe, noise: float, run: Optional[dict]) -> Optional[str]:
    """None if the run passes, else why it fails (one phrase)."""
    if run is None:
        return "no run directory (sbrun failed before training)"
    if run["status"] != "finished":
        return f"status {run['status']}: {run['reason']}"
    accs = run["accs"]
    if len(accs) < recipe.epochs:
        return f"only {len(accs)} of {recipe.epochs} epochs in metrics.csv"
    checked = accs[recipe.from_epoch - 1:] or accs[-1:]
    worst, floor = min(checked), recipe.floor[NOISE.index(noise)]
    if worst < floor:
        epoch = accs.index(worst) + 1
        return (f"test_acc {worst:.4f} at epoch {epoch} < {floor:.2f} "
                f"(per epoch: {' '.join(f'{a:.3f}' for a in accs)})")
    return None


def fmt_accs(accs: Sequence[float]) -> str:
    return " ".join(f"{a:.3f}" for a in accs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="directory holding MNIST/raw (and FashionMNIST/raw); without it the "
                         "real-data recipes are skipped")
    ap.add_argument("--only", default=None, help="run only recipes whose name contains this text")
    ap.add_argument("--keep", type=Path, default=None,
                    help="write the runs here instead of a temporary directory that is removed")
    ap.add_argument("--samplers", default=None,
                    help="comma-separated samplers to check (default: each recipe's own list)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra override for every run, e.g. to try a recipe change (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run (default 1: on a busy 2-core machine a second "
                         "thread made the small runs 4x slower)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run's accuracies")
    args = ap.parse_args(argv)
    data_dir = args.data_dir.expanduser().resolve() if args.data_dir else None

    failures, skipped, passed = [], [], 0
    t_all = time.perf_counter()
    # A missing dataset must fail fast, not try to download.
    env = dict(os.environ, SBRUN_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="sbrun-recipes-") as tmp:
        out_dir = (args.keep or Path(tmp)).resolve()
        for i, recipe in enumerate(recipes()):
            if args.only and args.only not in recipe.name:
                continue
            if args.samplers:
                keep = [s for s in recipe.samplers if s in args.samplers.split(",")]
                if not keep:
                    continue
                recipe = dataclasses.replace(recipe, samplers=keep)
            why = missing_data(recipe, data_dir)
            if why:
                skipped.append(recipe.name)
                print(f"skip  {recipe.name}: {why}", flush=True)
                continue
            tag = f"check{i}"
            t0 = time.perf_counter()
            proc = subprocess.run(command(recipe, out_dir, data_dir, tag, args.seed, args.override), env=env,
                                  capture_output=True, text=True)
            runs = collect(out_dir / "multirun" / tag)
            bad = 0
            for noise in NOISE:
                for sampler in recipe.samplers:
                    run = runs.get((sampler, noise))
                    label = f"{recipe.name} sampler={sampler} label_noise={noise:g}"
                    why = verdict(recipe, noise, run)
                    if why is None and run is None:
                        why = "no result"
                    if why:
                        bad += 1
                        failures.append(f"FAIL  {label}: {why}")
                    else:
                        passed += 1
                        if args.verbose:
                            print(f"ok    {label}: {fmt_accs(run['accs'])}", flush=True)
            if proc.returncode not in (0, 1) or (bad and not runs):
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                failures.append(f"FAIL  {recipe.name}: sbrun exited {proc.returncode}: {tail}")
            n = len(recipe.samplers) * len(NOISE)
            floors = "/".join(f"{f:.0%}" for f in recipe.floor)
            print(f"{'ok  ' if not bad else 'FAIL'}  {recipe.name}: {n - bad}/{n} runs reach {floors} "
                  f"(noise 0/0.2) from epoch {min(recipe.from_epoch, recipe.epochs)} of "
                  f"{recipe.epochs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for line in failures:
        print(line)
    print(f"{passed} runs passed, {len(failures)} failed, {len(skipped)} recipe(s) skipped "
          f"in {time.perf_counter() - t_all:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Find what collapses an SB / Stale-SB run for one epoch (issue 19, item 1), by measuring it.

Runs a recipe once per `sampler.epoch_end` and records every
SGD step: its size, lr and gradient norm. Around every step smaller than a batch (an end-of-epoch
flush) it also records the test accuracy just before and just after that one step, and after the
step with the batch-norm statistics re-estimated on 2,048 training examples (weights untouched), so
a collapse can be attributed to a single step and split into "running statistics" and "weights".

    python scripts/studies/collapse_mechanism.py --recipe mnist_study --data-dir ../shared/data
    python scripts/studies/collapse_mechanism.py --recipe digits_topk

Recipes: `mnist_study` is the study configuration that collapsed (Stale-SB beta=2, seed 1, work
budget 10, MNIST 20k, width-16 CNN, lr 0.05, no batch-norm re-estimation); `digits_topk` is a
small recipe whose end-of-epoch remainder is deterministic: Top-k keeps 10 of every 32 examples,
so 1,333 training examples leave exactly 1 chosen example at each epoch's end (1,330 leave none).
Writes results/studies/collapse/<recipe>_{steps,flushes,epochs}_<epoch_end>.csv: every step, the
partial steps with the accuracies around them, and the run's metrics rows.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from sbrun import loop
from sbrun.compose import config_dir, validate
from sbrun.evaluate import evaluate, recalibrate_bn
from sbrun.hooks import Hooks
from sbrun.runner import train

RECIPES = {
    "mnist_study": ["dataset=mnist", "dataset.subset=20000", "model=cnn", "model.width=16", "optim.lr=0.05",
         "sampler=stale_sb", "beta=2", "seed=1", "schedule=linear", "budget.unit=work", "budget.amount=10",
         "bn_recalibrate=0"],
    "digits_topk": ["dataset=digits", "dataset.subset=1333", "model=cnn", "batch_size=32", "sampler=topk", "beta=2",
                    "optim.lr=0.05", "epochs=10", "bn_recalibrate=0"],
}
QUIET = ["plots=false", "progress=off", "checkpoint.enabled=false"]
RECALIBRATE_ON = 2048


def grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else float("nan")


def accuracy_with_recalibrated_bn(p) -> float:
    """Test accuracy after re-estimating the batch-norm statistics; the model is restored after."""
    saved = copy.deepcopy(p.model.state_dict())
    keep = p.cfg.bn_recalibrate
    object.__setattr__(p.cfg, "bn_recalibrate", RECALIBRATE_ON)
    try:
        recalibrate_bn(p, epoch=10_000)
        return evaluate(p)[1]
    finally:
        object.__setattr__(p.cfg, "bn_recalibrate", keep)
        p.model.load_state_dict(saved)


def run(recipe: str, epoch_end: str, data_dir: str, out: Path) -> None:
    steps, flushes, rows = [], [], []
    original = loop.train_step

    def observed_step(p, run, ep, step, hooks):
        partial = step.total < p.cfg.batch_size
        before = evaluate(p)[1] if partial else None
        spent = original(p, run, ep, step, hooks)
        rec = {"epoch": ep.epoch + 1, "step": int(run.totals["steps"]) + ep.steps, "size": step.total,
               "lr": run.lr, "grad_norm": grad_norm(p.model)}
        steps.append(rec)
        if partial:
            flushes.append({**rec, "test_acc_before": before, "test_acc_after": evaluate(p)[1],
                            "test_acc_after_bn_reestimated": accuracy_with_recalibrated_bn(p)})
        return spent

    loop.train_step = observed_step
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = validate(compose("config", overrides=RECIPES[recipe] + QUIET + [f"data_dir={data_dir}",
                                                                f"sampler.epoch_end={epoch_end}"]))
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", hooks=Hooks(on_epoch=[rows.append]))
    finally:
        loop.train_step = original
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(steps).to_csv(out / f"{recipe}_steps_{epoch_end}.csv", index=False)
    pd.DataFrame(flushes).to_csv(out / f"{recipe}_flushes_{epoch_end}.csv", index=False)
    pd.DataFrame(rows).to_csv(out / f"{recipe}_epochs_{epoch_end}.csv", index=False)
    full = pd.DataFrame(steps).query(f"size == {cfg.batch_size}")
    print(f"{recipe} epoch_end={epoch_end}: full steps' gradient norm median {full.grad_norm.median():.3f}, "
          f"max {full.grad_norm.max():.3f}; test accuracy per epoch "
          f"{[round(r['test_acc'], 4) for r in rows]}")
    for f in flushes:
        print(f"  epoch {f['epoch']}: partial step of {f['size']} at lr {f['lr']:.4f}, gradient norm "
              f"{f['grad_norm']:.2f}; test accuracy {f['test_acc_before']:.4f} -> {f['test_acc_after']:.4f} "
              f"({f['test_acc_after_bn_reestimated']:.4f} with batch-norm statistics re-estimated)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="mnist_study", help="which configuration to run")
    ap.add_argument("--data-dir", default="../shared/data", help="folder holding MNIST/raw (torchvision layout)")
    ap.add_argument("--out", default="results/studies/collapse", help="folder for the CSVs")
    ap.add_argument("--epoch-end", nargs="+", default=["flush", "carry"],
                    help="sampler.epoch_end values to run (flush: the authors' partial step; carry: sbrun's default)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for epoch_end in args.epoch_end:
        run(args.recipe, epoch_end, args.data_dir, Path(args.out))


if __name__ == "__main__":
    main()

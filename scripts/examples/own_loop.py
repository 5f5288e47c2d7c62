"""Selective-Backprop in a plain PyTorch training loop, with no sbrun runner.

    python scripts/examples/own_loop.py --data-dir ../shared/data --limit 10000 --epochs 3

Reads MNIST-format idx files from <data-dir>/MNIST/raw (torchvision's layout; nothing is
downloaded or written). The first epoch backpropagates every example (priming, as in the paper);
from then on each batch gets a no-grad selection forward, `sel.select` picks examples by loss
percentile, and the kept ones are trained in full batches of --batch-size.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.datasets import MNIST

import sbrun


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def load(root: str, train: bool, limit: int | None = None):
    """Images as normalised float (N, 1, 28, 28) tensors and integer labels."""
    try:
        ds = MNIST(root=root, train=train, download=False)
    except RuntimeError:
        sys.exit(f"error: no MNIST idx files in {root}/MNIST/raw; pass --data-dir with "
                 "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte under it")
    x = ds.data[:limit].unsqueeze(1).float().div(255).sub(0.1307).div(0.3081)
    return x, ds.targets[:limit]


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000))) / len(y)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/")
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--beta", type=float, default=2.0, help="SB selectivity: keeps about 1/(1+beta)")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N training examples")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.beta > 0:
        p.error(f"--beta {args.beta} is invalid; allowed: a number > 0")

    x, y = load(args.data_dir, train=True, limit=args.limit)
    x_test, y_test = load(args.data_dir, train=False)
    torch.manual_seed(args.seed)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    order = torch.Generator().manual_seed(args.seed)
    sel = sbrun.SelectiveBackprop(beta=args.beta, generator=torch.Generator().manual_seed(args.seed + 1))
    batcher = sbrun.KeptBatches(batch_size=args.batch_size)

    def step(xb, yb):                         # fresh train-mode forward, plain mean loss
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        return len(yb)

    for epoch in range(args.epochs):
        priming = epoch == 0                  # full backprop; the loss window starts filling after
        backprops = 0
        for idx in torch.randperm(len(y), generator=order).split(args.batch_size):
            xb, yb = x[idx], y[idx]
            if priming:
                keep = torch.ones(len(yb), dtype=torch.bool)
            else:
                model.eval()                  # selection forward: eval mode, no graph
                with torch.no_grad():
                    keep = sel.select(F.cross_entropy(model(xb), yb, reduction="none"))
            batcher.add(xb[keep], yb[keep])
            backprops += sum(step(xs, ys) for xs, ys in batcher.full())
        # what is left waits for the next epoch: a smaller step on a few high-loss examples
        # can undo an epoch (docs/studies.md), so every step is a full batch
        print(f"epoch {epoch}  backprop fraction {backprops / len(y):.3f}  "
              f"test accuracy {accuracy(model, x_test, y_test):.4f}{'  (priming)' if priming else ''}",
              flush=True)


if __name__ == "__main__":
    main()

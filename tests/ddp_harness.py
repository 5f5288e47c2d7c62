"""Run `sbrun` under torchrun while recording every training step on every rank.

Usage: torchrun --nproc_per_node=N tests/ddp_harness.py RECORD_DIR sbrun-overrides...

For each step it saves the rank's parameters before the step, the examples the rank held, the
step's global size, the (DDP-averaged) gradient, and the parameters after the step, to
RECORD_DIR/rank<r>.pt. tests/test_distributed.py compares them across ranks and against a
single-process computation.
"""
import os
import sys

import torch

from sbrun import engine


def main() -> None:
    record_dir, argv = sys.argv[1], sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    steps = []
    original = engine.Trainer._train_step

    def flat(model):
        return torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    def recorded(self, step, state):
        entry = {"before": flat(self.model), "idx": step.idx.clone(), "total": step.total,
                 "epoch": state.epoch}
        optimizer_step = self.optimizer.step

        def capture():
            entry["grad"] = torch.cat([p.grad.detach().flatten().clone() for p in self.model.parameters()])
            optimizer_step()
        self.optimizer.step = capture
        try:
            original(self, step, state)
        finally:
            self.optimizer.step = optimizer_step
        entry["after"] = flat(self.model)
        steps.append(entry)

    engine.Trainer._train_step = recorded
    from sbrun.cli import main as sbrun_main
    try:
        sbrun_main(argv)
    finally:
        os.makedirs(record_dir, exist_ok=True)
        torch.save(steps, os.path.join(record_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()

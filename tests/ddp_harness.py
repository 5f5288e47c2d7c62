"""Run `sbrun` under torchrun while recording every training step on every rank.

Usage: torchrun --nproc_per_node=N tests/ddp_harness.py RECORD_DIR sbrun-overrides...

For each step it saves the rank's parameters before the step, the examples the rank held, the
step's global size, the (DDP-averaged) gradient, and the parameters after the step, to
RECORD_DIR/rank<r>.pt, and where the rank ran (RANK, LOCAL_RANK, the node's GROUP_RANK) and the
threads it still had after the run to RECORD_DIR/rank<r>.json. tests/test_distributed.py
compares them across ranks and against a single-process computation.
"""
import json
import os
import sys

import torch

from sbrun import hooks


def main() -> None:
    record_dir, argv = sys.argv[1], sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    steps = []

    def flat(model):
        return torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    def before(info):
        steps.append({"before": flat(info.model), "idx": info.idx.clone(), "total": info.total,
                      "epoch": info.epoch})

    def after(info):
        # the optimizer has stepped; the (DDP-averaged) gradients are still in .grad
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in info.model.parameters()]
        steps[-1]["grad"] = torch.cat([g.detach().flatten().clone() for g in grads])
        steps[-1]["after"] = flat(info.model)

    hooks.GLOBAL.before_step.append(before)
    hooks.GLOBAL.after_step.append(after)
    from sbrun.cli import main as sbrun_main
    try:
        sbrun_main(argv)
    finally:
        os.makedirs(record_dir, exist_ok=True)
        torch.save(steps, os.path.join(record_dir, f"rank{rank}.pt"))
        where = {k: int(os.environ.get(k, "0")) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE")}
        where["threads"] = thread_names()
        with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as f:
            json.dump(where, f)


def thread_names():
    """The names of this process's threads (Linux; None elsewhere)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return None
    names = []
    for t in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, t, "comm")) as f:
                names.append(f.read().strip())
        except OSError:          # a thread that ended meanwhile
            pass
    return sorted(names)


if __name__ == "__main__":
    main()

"""A torchrun entry point that runs sbrun and records every step of this rank.

Usage: torchrun --nproc_per_node=N tests/ddp_harness.py RECORD_DIR <sbrun overrides...>

For each step it saves the rank's parameters before the step, the examples the rank held, the
step's global size, the (DDP-averaged) gradient, and the parameters after the step, to
RECORD_DIR/rank<r>.pt, and where the rank ran (RANK, LOCAL_RANK, the node's GROUP_RANK) and the
threads it still had after the run to RECORD_DIR/rank<r>.json. tests/test_distributed.py
compares them across ranks and against a single-process computation. The recorder is attached
through the callbacks config group, and imported as `ddp_harness` (torchrun puts this script's
folder on sys.path).
"""
import atexit
import json
import os
import sys

import torch


def flat(tensors):
    return torch.cat([t.detach().flatten().clone() for t in tensors])


class Recorder:
    def __init__(self, out: str):
        self.steps = []
        self.path = os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt")
        atexit.register(self.save)    # however the run ends, as the process exits

    def before_step(self, info):
        self.steps.append({"before": flat(info.model.parameters()), "idx": info.idx.clone(), "total": info.total,
                           "epoch": info.epoch})

    def after_step(self, info):
        # the optimizer has stepped; the (DDP-averaged) gradients are still in .grad
        self.steps[-1]["grad"] = flat(p.grad if p.grad is not None else torch.zeros_like(p)
                                      for p in info.model.parameters())
        self.steps[-1]["after"] = flat(info.model.parameters())

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        torch.save(self.steps, self.path)


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


def main() -> None:
    from sbrun.cli import main as sbrun_main

    record_dir, argv = sys.argv[1], sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    try:
        sbrun_main(argv + ["+callbacks.record._target_=ddp_harness.Recorder", f"+callbacks.record.out='{record_dir}'"])
    finally:
        os.makedirs(record_dir, exist_ok=True)
        where = {k: int(os.environ.get(k, "0")) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE")}
        where["threads"] = thread_names()
        with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as f:
            json.dump(where, f)


if __name__ == "__main__":
    main()

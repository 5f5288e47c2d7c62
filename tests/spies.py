"""Callbacks the tests attach to a run through the `callbacks` config group, e.g.
`+callbacks.kill._target_=spies.KillAfter +callbacks.kill.after=20`. tests/ is importable under
pytest, and in the subprocesses conftest starts (on their PYTHONPATH)."""
import json
import os
import signal
import time


class KillAfter:
    """Signals this process after its `after`-th training step: a pre-emption or a crash at a
    chosen point mid-epoch. `sleep` slows every step up to that one by that many seconds. Steps
    count across the process: each job of a sweep builds its own KillAfter."""
    steps = 0

    def __init__(self, after: int, sig: str = "SIGKILL", sleep: float = 0.0):
        self.after, self.sig, self.sleep = after, getattr(signal, sig), sleep

    def after_step(self, info) -> None:
        KillAfter.steps += 1
        if KillAfter.steps <= self.after:
            time.sleep(self.sleep)
        if KillAfter.steps == self.after:
            os.kill(os.getpid(), self.sig)


class StepLog:
    """Appends each training step's numbers to a JSON-lines file (conftest's `steps` fixture)."""

    def __init__(self, path: str):
        self.path = path

    def after_step(self, info) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": info.epoch, "step": info.step, "size": info.idx.numel(),
                                "total": info.total, "lr": info.lr}) + "\n")

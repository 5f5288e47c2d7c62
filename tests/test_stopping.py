"""When a run stops (sbrun.stopping: one decision, one collective per chunk), what its checkpoint
holds (derived from the state dataclasses' fields) and where its totals come from (one Usage)."""
import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from sbrun import checkpoint as ckpt
from sbrun import state
from sbrun.budget import Costs, Meter, Usage
from sbrun.build import build
from sbrun.distributed import Collective
from sbrun.hooks import Hooks
from sbrun.loop import run_epoch
from sbrun.queue import BackpropQueue
from sbrun.state import LOCAL, RUNTIME, SHARED, TOTALS, EpochState, RunState, kept
from sbrun.stopping import At, Flags, Stop, should_stop

CPU = torch.device("cpu")


# --- 1. one decision ------------------------------------------------------------------------------

def parts(unit="backprops", amount=1.0, hours=None):
    """What should_stop reads of a run: a length of `amount` (`epochs` when None) in `unit` over
    100 examples, an `hours` cap, one process."""
    meter = Meter(unit, 2.0 if amount is None else amount, 100, Costs(1.0, 3.0))
    cfg = SimpleNamespace(hours=hours, budget=SimpleNamespace(amount=amount))
    return SimpleNamespace(meter=meter, cfg=cfg, dist=Collective.single())


SPENT, LEFT = Usage(epochs=5.0, backprops=100, seconds=10.0), Usage(epochs=0.5, backprops=50, seconds=10.0)


@pytest.mark.parametrize("p,u,at,flags,want", [
    (parts(), SPENT, At.STEP, Flags(), Stop.BUDGET),
    (parts(), LEFT, At.STEP, Flags(), Stop.NO),
    (parts("epochs", 2.0), SPENT, At.STEP, Flags(), Stop.NO),          # epochs run out only between chunks
    (parts("epochs", 2.0), SPENT, At.CHUNK, Flags(), Stop.BUDGET),
    (parts("epochs", None), SPENT, At.EPOCH, Flags(), Stop.EPOCHS),     # no budget.amount: `epochs` are the length
    (parts(), SPENT, At.CHUNK, Flags(signal=True), Stop.SIGNAL),       # a signal before the length
    (parts(), LEFT, At.CHUNK, Flags(signal=True, over_hours=True), Stop.HOURS),
    (parts(), LEFT, At.CHUNK, Flags(step=Stop.BUDGET, signal=True, over_hours=True), Stop.BUDGET),
    (parts(), SPENT, At.EPOCH_END, Flags(signal=True), Stop.NO),       # the epoch closes first
    (parts(), LEFT, At.EPOCH_END, Flags(over_hours=True), Stop.HOURS),
    (parts(hours=1e-3), SPENT, At.EPOCH, Flags(), Stop.HOURS),         # 10 s against a 3.6 s cap
    (parts(hours=1e-3), LEFT, At.CHUNK, Flags(), Stop.NO),             # the cap is an epoch boundary's
    (parts(hours=1.0), LEFT, At.EPOCH, Flags(), Stop.NO),
])
def test_should_stop_is_one_decision_with_one_order(p, u, at, flags, want):
    assert should_stop(p, u, at, flags) is want


def counted_collectives(p, monkeypatch):
    calls = {"any": 0, "gather_ints": 0}
    for name in calls:
        real = getattr(p.dist, name)

        def spy(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)
        monkeypatch.setattr(p.dist, name, spy)
    return calls


@pytest.mark.parametrize("asked_at,want,walked", [(2, Stop.SIGNAL, 3), (15, Stop.NO, 16), (None, Stop.NO, 16)])
def test_a_stop_request_rides_the_chunk_gather(tiny_config, tmp_path, monkeypatch, asked_at, want, walked):
    """16 chunks of 32: a request seen at chunk 2's gather stops the epoch before chunk 3; one
    seen at the last chunk lets the epoch close. Either way the chunk's one gather is the only
    collective (nan_check off, an epochs length, no hours cap)."""
    p = build(tiny_config("sampler=traditional", "nan_check=false"), tmp_path, CPU)
    run, ep = RunState.new(p.n, CPU, 0.05), EpochState.new(0, p.local_batch, 0, CPU)
    calls = counted_collectives(p, monkeypatch)
    asked = iter(range(100))
    stop = run_epoch(p, run, ep, Hooks(), lambda: next(asked) == asked_at)
    assert stop is want and ep.chunk_index == walked and ep.n_chunks == 16
    assert calls == {"any": 0, "gather_ints": 1 + walked}      # the chunk count, then one per chunk


# --- 2. checkpoint state from the fields ------------------------------------------------------------

def test_every_state_field_says_where_a_checkpoint_keeps_it():
    for cls in (RunState, EpochState):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("scope") in (SHARED, LOCAL, RUNTIME), f"{cls.__name__}.{f.name}"


def test_the_checkpoint_keys_are_those_of_format_2():
    ep = EpochState.new(0, 32, 0, CPU)
    assert list(ep.shared()) == ["epoch", "chunk", "n_chunks", "global_backprops", "select_forwards",
                                 "proxy_backprops", "steps", "loaded", "phases", "mark"]
    assert set(ep.local()) == {"backprops", "loss_sum", "mislabeled", "visit", "queue", "gen_states"}
    run = RunState.new(4, CPU, 0.1)
    assert list(run.shared()) == ["epoch", "totals", "rows", "snapshots", "lr", "stop_reason", "evals", "pending",
                                  "extra"]
    assert list(run.local()) == ["last_loss", "counts"]


def test_state_round_trips_and_an_older_checkpoint_keeps_the_defaults_it_lacks():
    ep = EpochState.new(1, 2, 0, CPU)
    ep.chunk_index, ep.loaded, ep.backprops, ep.phases = 5, 7, 3, {"total": 1.5}
    ep.visit = torch.tensor([True, False, True])
    ep.queue.push(torch.tensor([4]), torch.ones(1, 2), torch.tensor([1]), None, [1])
    shared, local = ep.shared(), ep.local()
    ep.phases["total"] = 9.0                        # a snapshot: later changes stay out of it
    del shared["loaded"]                            # written before examples_loaded was counted
    back = EpochState.new(1, 2, 0, CPU)
    back.load(SHARED, shared, CPU)
    back.load(LOCAL, local, CPU)
    assert (back.chunk_index, back.loaded, back.backprops, back.phases) == (5, 0, 3, {"total": 1.5})
    assert torch.equal(back.visit, ep.visit) and len(back.queue) == 1
    run = RunState.new(3, CPU, 0.1)
    run.totals.update(backprops=12, loaded=4)
    saved = run.shared()
    del saved["totals"]["loaded"]
    again = RunState.new(3, CPU, 0.0)
    again.load(SHARED, saved, CPU)
    assert list(again.totals) == list(TOTALS) and again.totals["backprops"] == 12 and again.totals["loaded"] == 0.0
    assert again.lr == 0.1


def test_a_new_state_field_is_one_line():
    @dataclasses.dataclass
    class Grown(EpochState):
        seen: int = kept(SHARED, default=0)
        scratch: int = kept(RUNTIME, default=0)

    zero = torch.zeros(())
    grown = Grown(0, BackpropQueue(2), zero, zero, seen=4, scratch=9)
    assert grown.shared()["seen"] == 4 and "scratch" not in {**grown.shared(), **grown.local()}
    back = Grown(0, BackpropQueue(2), zero, zero)
    back.load(SHARED, grown.shared(), CPU)
    assert (back.seen, back.scratch) == (4, 0)


# --- 3. one Usage, totals in one place ---------------------------------------------------------------

def test_usage_between_epochs_is_that_of_a_fresh_epoch():
    run = RunState.new(3, CPU, 0.1)
    run.epoch = 2
    run.totals.update(select_forwards=10, backprops=7, loaded=5, proxy_backprops=1, extra_work=0.5)
    between = state.usage(run, None, 3.0)
    assert between == state.usage(run, EpochState.new(2, 32, 0, CPU), 3.0)
    assert (between.epochs, between.backprops, between.loaded, between.extra_work) == (2.0, 7, 5, 0.5)


def test_a_checkpoints_totals_are_its_last_rows(run_tiny):
    run_dir, summary = run_tiny("sampler=sb", "epochs=2")
    totals = ckpt.load(ckpt.latest(run_dir))["run"]["totals"]
    rows = pd.read_csv(run_dir / "metrics.csv")
    last = rows.iloc[-1]
    assert (totals["backprops"], totals["select_forwards"], totals["steps"]) == \
        (last["backprops"], last["select_forwards"], last["steps"]) == \
        (summary["total_backprops"], summary["total_select_forwards"], summary["total_steps"])
    assert totals["loaded"] == rows["examples_loaded"].sum() > 0
    assert totals["train_time"] == pytest.approx(last["train_time_s"]) == summary["train_time_s"]

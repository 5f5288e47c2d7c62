"""What a run writes: metrics rows, summary.json, per-example counts, extremes and loss snapshots.

Rows and summaries are built by pure functions of the run's state; the writers only run on
rank 0 and replace each file atomically.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Dict, Optional

import torch

from . import records, state
from .budget import Usage
from .identity import to_dict
from .proxy import PHASES as PROXY_PHASES
from .proxy import proxy_label
from .state import EpochState, RunState
from .timing import PHASES

if TYPE_CHECKING:
    from .build import Parts

log = logging.getLogger("sbrun")

# Below this multiple of chance accuracy a run "learned nothing" and says so.
CHANCE_MARGIN = 1.5


def epoch_row(p: Parts, run: RunState, ep: EpochState, phases: Dict[str, float], extra: Dict[str, float],
              scores: Dict[str, float], wall_time: float) -> Dict[str, float]:
    """The metrics.csv row of `ep` (complete, or cut short by the budget), with the run's totals
    up to its end. Reduces this rank's counters across ranks (a collective)."""
    u = state.usage(run, ep, run.totals["train_time"] + phases["total"])
    return metrics_row(p, run, u, ep.epoch + 1, state.counted(run, ep)["steps"],
                       epoch_counters(p, ep, phases, ep.walked()), scores, extra, wall_time)


def epoch_counters(p: Parts, ep: EpochState, phases: Dict[str, float], walked: float) -> Dict[str, float]:
    """What `ep` has counted so far, all ranks together (a collective): the per-interval sums a
    row reports (train loss, mislabeled and backpropagated examples, epochs walked, phase seconds)."""
    sums = p.dist.all_sum(torch.stack([ep.loss_sum.float(), ep.mislabeled.float(),
                                       torch.tensor(float(ep.backprops), device=p.device)]))
    loss_sum, mislabeled, counted = sums.tolist()
    return {"loss_sum": loss_sum, "mislabeled": mislabeled, "counted": counted,
            "backprops": float(ep.global_backprops), "loaded": float(ep.loaded), "epochs": walked, **phases}


# The keys of epoch_counters (PhaseTimer.end_epoch's phases plus the reduced counters).
INTERVAL_KEYS = ("loss_sum", "mislabeled", "counted", "backprops", "loaded", "epochs", *PHASES, *PROXY_PHASES,
                 "other", "total")


def metrics_row(p: Parts, run: RunState, u: Usage, epoch: float, steps: int, interval: Dict[str, float],
                scores: Dict[str, float], extra: Dict[str, float], wall_time: float) -> Dict[str, float]:
    """A metrics.csv row: the run's cumulative counters at `u`, `interval`'s per-interval columns
    (since the previous row: an epoch, or a stretch of the evaluation grid) and the scores."""
    counted = interval["counted"]
    row = {
        "epoch": epoch,
        "train_time_s": u.seconds,
        "wall_time_s": wall_time,
        "epoch_time_s": interval["total"],
        "select_forwards": u.select_forwards,
        "backprops": u.backprops,
        "steps": steps,
        "examples_seen": round(u.epochs * p.n),
        "backprop_frac": interval["backprops"] / (p.n * interval["epochs"]) if interval["epochs"] else 0.0,
        "examples_loaded": round(interval["loaded"]),    # read from storage since the previous row
        "work": p.meter.work(u),
        "budget_frac": p.meter.fraction(u),
        "lr": run.lr,
        "train_loss": interval["loss_sum"] / counted if counted else float("nan"),
        **scores,       # test_loss, test_acc, test_error (and val_* with a validation split)
        "mislabeled_frac": interval["mislabeled"] / counted if counted else 0.0,
        "time_select_fwd_s": interval["select_fwd"],
        "time_train_fwd_s": interval["train_fwd"],
        "time_backward_s": interval["backward"],
        "time_other_s": interval["other"] + interval["data"] + interval["bookkeeping"],
        "time_data_s": interval["data"],
        "time_bookkeeping_s": interval["bookkeeping"],
    }
    if p.proxy is not None:     # only then: a run without a proxy writes the columns it always did
        row.update(proxy_backprops=u.proxy_backprops, time_proxy_fwd_s=interval.get("proxy_fwd", 0.0),
                   time_proxy_bwd_s=interval.get("proxy_bwd", 0.0))
    row.update(extra)
    return row


def record_row(p: Parts, run: RunState, row: Dict, hooks) -> None:
    """Append a row, write metrics.csv, log it, keep a loss snapshot when one is due, call the
    on_epoch hooks."""
    before = run.rows[-1]["budget_frac"] if run.rows else 0.0
    run.rows.append(row)
    if p.dist.rank == 0:
        records.MetricsLog(p.run_dir, run.rows).write()
        log.info(log_line(row, p.cfg))
    last = row["budget_frac"] >= 1.0 - 1e-9
    if snapshot_due(p.cfg.loss_snapshots, before, row["budget_frac"], last):
        snapshot_losses(p, run)
    hooks.call("on_epoch", row)


def fold_epoch(run: RunState, ep: EpochState, phases: Dict[str, float], wall_time: float) -> None:
    """Add a completed epoch's counters to the run's totals."""
    run.totals.update(state.counted(run, ep), train_time=run.totals["train_time"] + phases["total"],
                      wall_time=wall_time)
    run.epoch = ep.epoch + 1


def log_line(row: Dict, cfg) -> str:
    epoch = f"{row['epoch']:>3}" if cfg.eval.every is None else f"{row['epoch']:.2f}"   # fractional on a grid
    where = (f"{epoch}/{cfg.epochs}" if cfg.budget.amount is None else
             f"{epoch} ({row['budget_frac']:.0%} of {cfg.budget.amount:g} {cfg.budget.unit})")
    val = f"  val_acc {row['val_acc']:.4f}" if "val_acc" in row else ""
    loss = f"{row['train_loss']:.4f}" if row["backprop_frac"] > 0 else "- (nothing backpropagated)"
    return (f"epoch {where}  test_acc {row['test_acc']:.4f}{val}  train_loss {loss}  "
            f"backprop {row['backprop_frac']:.3f}  lr {row['lr']:.4g}  time {row['train_time_s']:.1f}s")


def chance_note(test_acc: Optional[float], num_classes: int) -> Optional[str]:
    """A note when the final accuracy is no better than guessing (within CHANCE_MARGIN x 1/K)."""
    if test_acc is None or math.isnan(test_acc):
        return None
    chance = 1.0 / num_classes
    if test_acc < CHANCE_MARGIN * chance:
        return (f"the run ended at chance accuracy ({test_acc:.1%}; chance is {chance:.1%} for {num_classes} "
                f"classes): it learned nothing")
    return None


def run_params(cfg) -> Dict:
    """The columns that identify a run in merged tables and figure legends."""
    b = cfg.budget
    return {"dataset": cfg.dataset.name, "model": cfg.model.name, "sampler": cfg.sampler.name,
            **cfg.sampler.describe(), "label_noise": cfg.label_noise, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "epochs": cfg.epochs if b.amount is None else None, "lr": cfg.optim.lr,
            "budget_unit": b.unit if b.amount is not None else None, "budget_amount": b.amount,
            # selection_forward only where the sampler runs scoring forwards at all
            "selection_forward": cfg.selection_forward if cfg.sampler.scores else None,
            "bn_recalibrate": cfg.bn_recalibrate,
            # the scoring forward's cost options, like selection_forward, where the sampler scores
            "scoring_scale": cfg.scoring.scale if cfg.sampler.scores else None,
            "scoring_precision": cfg.scoring.precision if cfg.sampler.scores else None,
            # a proxy scorer makes its own configuration (a run without one records no such key)
            **({"scoring_proxy": proxy_label(cfg.scoring.proxy)} if cfg.scoring.proxy.enabled else {}),
            # the evaluation grid, where one is set (rows at equal compute points)
            "eval_every": cfg.eval.every, "eval_unit": cfg.eval.unit if cfg.eval.every is not None else None,
            # the validation split, where a run holds one out (it is part of what the run computes)
            **{f"dataset_{k}": getattr(cfg.dataset, k) if cfg.dataset.val_fraction > 0 else None
               for k in ("val_fraction", "val_seed")}}


# summary.json's totals, and the metrics.csv column each repeats
ROW_TOTALS = {"total_backprops": "backprops", "total_select_forwards": "select_forwards", "total_steps": "steps",
              "total_work": "work", "train_time_s": "train_time_s", "wall_time_s": "wall_time_s"}


def last_row_totals(run: RunState) -> Dict:
    """summary.json's totals: the last row's, the point its test accuracy is from. The loop's own
    running totals (run.totals, with the epoch in progress in EpochState) are the one source every
    row's totals come from (state.usage); they may run past the last row (an evaluation grid
    evaluates between epochs). Before any row: nothing spent but the sampler's first phase."""
    if run.rows:
        return {k: run.rows[-1][col] for k, col in ROW_TOTALS.items()}
    return {"total_backprops": 0, "total_select_forwards": 0, "total_steps": 0, "total_work": run.totals["extra_work"],
            "train_time_s": 0.0, "wall_time_s": 0.0}


def summary(p: Parts, run: RunState, status: str, **extra) -> Dict:
    accs = [r["test_acc"] for r in run.rows]
    final = accs[-1] if accs else None
    out = {
        "status": status,
        "stop_reason": run.stop_reason,
        "params": run_params(p.cfg),
        "overrides": p.overrides,
        "config": to_dict(p.cfg),
        "effective": p.effective,
        "dataset_meta": p.data.meta,
        "epochs_completed": run.epoch,
        "final_test_acc": final,
        "best_test_acc": max(accs) if accs else None,
        "final_test_error": 1 - final if final is not None else None,
        **last_row_totals(run),
        "compile_warmup_s": p.compile_warmup_s,
        "n_train": p.n,
        "noisy_examples": int(p.data.noisy.sum()),
        "world_size": p.dist.world,
        **{f"prepare_{k}": v for k, v in p.prepared.items()},
        **p.environment,
    }
    note = chance_note(final, p.data.meta["num_classes"]) if status == records.FINISHED else None
    if note:
        out["warning"] = note
    out.update(extra)
    return out


def write_summary(p: Parts, run: RunState, status: str, **extra) -> Dict:
    out = summary(p, run, status, **extra)
    if p.dist.rank == 0:
        records.write_json(p.run_dir / records.SUMMARY, out)
    return out


def snapshot_due(k: int, before: float, after: float, last: bool) -> bool:
    """Whether an epoch that moved the run from fraction `before` to `after` crosses one of k
    evenly spaced points (the last epoch always does)."""
    return k > 0 and (last or math.floor(after * k + 1e-9) > math.floor(before * k + 1e-9))


def snapshot_losses(p: Parts, run: RunState) -> None:
    """Keep per-example losses for the loss-CDF figure (every rank joins the reduction)."""
    losses = p.dist.all_min(run.last_loss).cpu().clone()
    # keyed by the 1-based epoch in progress (a grid row's fractional epoch, rounded up)
    run.snapshots[f"epoch_{math.ceil(run.rows[-1]['epoch'] - 1e-9)}"] = losses
    if p.dist.rank == 0:
        records.write_npz(p.run_dir / records.SNAPSHOTS, **{k: v.numpy() for k, v in run.snapshots.items()})


def finish_outputs(p: Parts, run: RunState) -> None:
    """Per-example counts, extremes and figures (rank 0; also on a graceful stop)."""
    counts = p.dist.all_sum(run.counts)
    last_loss = p.dist.all_min(run.last_loss)
    if p.dist.rank != 0:
        return
    d = p.data
    records.write_counts(p.run_dir, counts, d.train.labels, d.true_labels, d.noisy, last_loss)
    write_extremes(p, counts.cpu())
    if p.cfg.plots and run.rows:
        try:
            from .plots import per_run
            per_run(p.run_dir)
        except Exception as err:  # a figure must never cost the run its results
            log.warning("per-run figures failed: %s", err)


def write_extremes(p: Parts, counts: torch.Tensor) -> None:
    k = min(p.cfg.extremes, p.n // 2)
    if k == 0:
        return
    d = p.data
    order = torch.argsort(counts, stable=True)   # ties broken by index: deterministic
    arrays = {}
    for name, idx in {"least": order[:k], "most": order.flip(0)[:k]}.items():
        arrays[f"{name}_index"] = idx.numpy()
        arrays[f"{name}_images"] = d.train.images[idx].numpy()
        arrays[f"{name}_label"] = d.train.labels[idx].numpy()
        arrays[f"{name}_true_label"] = d.true_labels[idx].numpy()
        arrays[f"{name}_noisy"] = d.noisy.cpu()[idx].numpy()
        arrays[f"{name}_count"] = counts[idx].numpy()
    arrays["classes"] = d.classes
    records.write_npz(p.run_dir / records.EXTREMES, **arrays)

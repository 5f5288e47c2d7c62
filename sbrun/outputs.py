"""What a run writes: metrics rows, summary.json, per-example counts, extremes and loss snapshots.

Rows and summaries are built by pure functions of the run's state; the writers only run on
rank 0 and replace each file atomically.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional

import torch

from . import records
from .budget import Usage
from .config import to_dict
from .state import EpochState, RunState

log = logging.getLogger("sbrun")

# Below this multiple of chance accuracy a run "learned nothing" and says so.
CHANCE_MARGIN = 1.5


def epoch_row(p, run: RunState, ep: EpochState, phases: Dict[str, float], extra: Dict[str, float],
              test_loss: float, test_acc: float, wall_time: float) -> Dict[str, float]:
    """The metrics.csv row of `ep` (complete, or cut short by the budget), with the run's totals
    up to its end. Reduces this rank's counters across ranks (a collective)."""
    sums = p.dist.all_sum(torch.stack([ep.loss_sum.float(), ep.mislabeled.float(),
                                       torch.tensor(float(ep.backprops), device=p.device)]))
    loss_sum, mislabeled, backprops = sums.tolist()
    tot = run.totals
    walked = ep.chunk / max(ep.n_chunks, 1)         # 1 for a complete epoch
    u = Usage(epochs=run.epoch + walked, select_forwards=int(tot["select_forwards"]) + ep.select_forwards,
              backprops=int(tot["backprops"]) + ep.global_backprops, seconds=tot["train_time"] + phases["total"],
              extra_work=tot["extra_work"])
    row = {
        "epoch": ep.epoch + 1,
        "train_time_s": u.seconds,
        "wall_time_s": wall_time,
        "epoch_time_s": phases["total"],
        "select_forwards": u.select_forwards,
        "backprops": u.backprops,
        "steps": int(tot["steps"]) + ep.steps,
        "examples_seen": round((run.epoch + walked) * p.n),
        "backprop_frac": ep.global_backprops / (p.n * walked) if walked else 0.0,
        "work": p.meter.work(u),
        "budget_frac": p.meter.fraction(u),
        "lr": run.lr,
        "train_loss": loss_sum / backprops if backprops else float("nan"),
        "test_loss": test_loss,
        "test_acc": test_acc,
        "test_error": 1.0 - test_acc,
        "mislabeled_frac": mislabeled / backprops if backprops else 0.0,
        "time_select_fwd_s": phases["select_fwd"],
        "time_train_fwd_s": phases["train_fwd"],
        "time_backward_s": phases["backward"],
        "time_other_s": phases["other"] + phases["data"] + phases["bookkeeping"],
        "time_data_s": phases["data"],
        "time_bookkeeping_s": phases["bookkeeping"],
    }
    row.update(extra)
    return row


def fold_epoch(run: RunState, ep: EpochState, row: Dict) -> None:
    """Add a completed epoch's counters to the run's totals."""
    run.totals.update(select_forwards=row["select_forwards"], backprops=row["backprops"], steps=row["steps"],
                      train_time=row["train_time_s"], wall_time=row["wall_time_s"])
    run.epoch = ep.epoch + 1


def log_line(row: Dict, cfg) -> str:
    where = (f"{row['epoch']:>3}/{cfg.epochs}" if cfg.budget.amount is None else
             f"{row['epoch']:>3} ({row['budget_frac']:.0%} of {cfg.budget.amount:g} {cfg.budget.unit})")
    loss = f"{row['train_loss']:.4f}" if row["backprop_frac"] > 0 else "- (nothing backpropagated)"
    return (f"epoch {where}  test_acc {row['test_acc']:.4f}  train_loss {loss}  "
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
            "scoring_precision": cfg.scoring.precision if cfg.sampler.scores else None}


def summary(p, run: RunState, status: str, **extra) -> Dict:
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
        "total_backprops": run.rows[-1]["backprops"] if run.rows else 0,
        "total_select_forwards": run.rows[-1]["select_forwards"] if run.rows else 0,
        "total_steps": run.rows[-1]["steps"] if run.rows else 0,
        "total_work": run.rows[-1]["work"] if run.rows else run.totals["extra_work"],
        "train_time_s": run.rows[-1]["train_time_s"] if run.rows else 0.0,
        "wall_time_s": run.rows[-1]["wall_time_s"] if run.rows else 0.0,
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


def write_summary(p, run: RunState, status: str, **extra) -> Dict:
    out = summary(p, run, status, **extra)
    if p.dist.rank == 0:
        records.write_json(p.run_dir / records.SUMMARY, out)
    return out


def snapshot_due(k: int, before: float, after: float, last: bool) -> bool:
    """Whether an epoch that moved the run from fraction `before` to `after` crosses one of k
    evenly spaced points (the last epoch always does)."""
    return k > 0 and (last or math.floor(after * k + 1e-9) > math.floor(before * k + 1e-9))


def snapshot_losses(p, run: RunState) -> None:
    """Keep per-example losses for the loss-CDF figure (every rank joins the reduction)."""
    losses = p.dist.all_min(run.last_loss).cpu().clone()
    run.snapshots[f"epoch_{run.rows[-1]['epoch']}"] = losses
    if p.dist.rank == 0:
        records.write_npz(p.run_dir / records.SNAPSHOTS, **{k: v.numpy() for k, v in run.snapshots.items()})


def finish_outputs(p, run: RunState) -> None:
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


def write_extremes(p, counts: torch.Tensor) -> None:
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

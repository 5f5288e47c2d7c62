"""RHO-LOSS (Mindermann et al., ICML 2022): train on the examples whose loss the model can still
reduce, judged against what a model trained on held-out data cannot reduce.

Two phases:
1. `sub_run` and `prepare`: a seeded `holdout` fraction of the training set trains an
   irreducible-loss model (a nested, Traditional sbrun run in `<run_dir>/irreducible/`, which the
   runner trains, with its own metrics, summary and checkpoints, so a kill during this phase
   resumes it). That model then scores every other training example once, in eval mode and
   without augmentation; the losses are cached in `<run_dir>/irreducible/losses.pt`.
2. The loop: the main model never visits the holdout. Each step scores a pool of
   pool_factor * batch_size examples and backpropagates the batch_size of them with the largest
   reducible loss, loss - irreducible loss.

Facts from the paper and its reference implementation (OATML/RHO-Loss); the code is ours.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional

import torch
import torch.nn.functional as F

from .. import records
from ..config import BudgetConfig, ConfigError, check
from ..data import ImageSet
from ..seeding import derive_seed, generator
from . import rules
from .base import Ctx, Need, Sampler, SamplerConfig, Selection, SubRun, TraditionalConfig

log = logging.getLogger("sbrun")

SUB_DIR = "irreducible"      # the irreducible-loss model's run, inside the main run directory
CACHE = "losses.pt"          # its precomputed losses and the holdout split


@dataclass
class RhoConfig(SamplerConfig):
    name: str = "rho"
    pool_factor: int = 10        # score pool_factor * batch_size examples per step, keep batch_size
    holdout: float = 0.5         # fraction of the training set that trains the irreducible-loss model
    epochs: int = 10             # the irreducible-loss model's epochs
    model: Optional[Dict[str, Any]] = None   # its model node (_target_ + keys); null = the run's model
    clean_holdout: bool = False  # train it on the holdout's true labels (a clean holdout)
    prime_epochs: int = 0

    scores: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pool_factor >= 1, "sampler.pool_factor", self.pool_factor, "an integer >= 1")
        check(0.0 < self.holdout < 1.0, "sampler.holdout", self.holdout, "a number in (0, 1)")
        check(self.epochs >= 1, "sampler.epochs", self.epochs, "an integer >= 1")
        if self.model is not None:
            self.model_spec()      # a bad node fails at validation, before anything runs

    def model_spec(self):
        """The irreducible-loss model's ModelConfig, or None for the run's own model."""
        if self.model is None:
            return None
        from ..components import model_config

        try:
            return model_config(dict(self.model))
        except ConfigError as err:   # its messages name `model.`; this node is `sampler.model.`
            raise ConfigError(f"sampler.{err}" if str(err).startswith("model") else str(err)) from None

    def make(self, env):
        return RhoLoss(self, env)

    def describe(self):
        return {"beta": None, "staleness": None, "selectivity": 1.0 / self.pool_factor}


# --- the rule and the split, as pure functions ---------------------------------------------------

def holdout_mask(n: int, fraction: float, seed: int) -> torch.Tensor:
    """The holdout (a bool mask over n training examples): round(fraction * n) of them, drawn by a
    stream derived from the run seed, so every rank and every restart draws the same split."""
    size = round(fraction * n)
    if not 1 <= size < n:
        raise ConfigError(f"sampler.holdout={fraction} is invalid for {n} training examples (a holdout of "
                          f"{size}); allowed: a fraction that leaves at least one example on each side")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator("cpu", seed, "rho", "holdout"))[:size]] = True
    return mask


def pool_keep(n: int, batch: int, pool: int) -> int:
    """Examples kept from a pool of n: batch_size from a full pool; from the epoch's last, smaller
    pool the same share, rounded down as the reference's int(percent_train * n), at least one."""
    if n == 0:
        return 0
    return batch if n >= pool else max(1, n * batch // pool)


def reducible_topk(losses: torch.Tensor, irreducible: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest reducible losses, loss - irreducible loss."""
    return rules.topk_positions(losses.float() - irreducible.float(), k)


# --- the sampler ---------------------------------------------------------------------------------

class RhoLoss(Sampler):
    """Per step, keep the top batch_size of a pool by reducible loss (see the module docstring).

    Under DDP each rank keeps the top of its own share of the pool (the reference runs on one
    GPU); the irreducible losses are global per example, computed identically on every rank.
    Nothing needs checkpointing: the holdout follows from the seed and the irreducible losses
    from the cache (or the nested run's final checkpoint), which `sub_run` and `prepare` reload on
    every start.
    """

    def __init__(self, cfg: RhoConfig, env):
        super().__init__(cfg, env)
        self.pool = cfg.pool_factor * env.batch_size
        self.holdout = holdout_mask(env.n_train, cfg.holdout, env.seed)
        self.irreducible: Optional[torch.Tensor] = None    # per training example; NaN on the holdout
        self.cached: Optional[dict] = None                 # phase 1's cache, read by sub_run

    def chunk_size(self, select_size: int) -> int:
        return self.pool

    def visit(self, epoch: int, progress: float, generator: torch.Generator) -> Optional[torch.Tensor]:
        return ~self.holdout

    def need(self, ctx: Ctx) -> Need:
        return Need.NONE if self.priming(ctx) else Need.FRESH

    def select(self, losses, ctx: Ctx) -> Selection:
        if losses is None:
            return Selection.everything()
        k = pool_keep(losses.numel(), self.env.batch_size, self.pool)
        if k == 0:
            return Selection(torch.empty(0, dtype=torch.long, device=self.device))
        return Selection(reducible_topk(losses, self.irreducible[ctx.idx], k))

    def sub_run(self, parts) -> Optional[SubRun]:
        """The irreducible-loss model's run, unless an earlier start cached its losses."""
        self.cached = read_cache(Path(parts.run_dir) / SUB_DIR / CACHE)
        return None if self.cached is not None else irreducible_run(parts, self.cfg, self.holdout)

    def prepare(self, parts, sub: Optional[SubRun] = None) -> Dict[str, float]:
        cache = Path(parts.run_dir) / SUB_DIR / CACHE
        if sub is not None:
            saved = irreducible_losses(parts, sub, self.holdout)
            if parts.dist.rank == 0:
                buf = io.BytesIO()
                torch.save(saved, buf)
                records.atomic_write(cache, buf.getvalue())
        else:
            saved = self.cached
            if saved is None:
                raise RuntimeError("RhoLoss.prepare needs sub_run first (the runner calls both)")
            if not torch.equal(saved["holdout"], self.holdout.nonzero().squeeze(1)):
                raise ConfigError(f"{cache} holds another holdout split than this run's (seed, dataset or "
                                  f"sampler.holdout differ); allowed: the run it was written for (delete "
                                  f"{cache.parent} to train the irreducible-loss model again)")
        self.irreducible = saved["losses"].to(self.device)
        meter = parts.meter
        if meter.unit == "work" and saved["prepared"]["extra_work"] >= meter.total:
            log.warning("the irreducible-loss phase spent %.3f work units, the whole budget.amount=%g: the main "
                        "model will not train; allowed: a budget.amount above %.3f", saved["prepared"]["extra_work"],
                        meter.total, saved["prepared"]["extra_work"])
        return dict(saved["prepared"])


def read_cache(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:     # a foreign or damaged file is recomputed from the nested run, not trusted
        log.warning("%s is unreadable; recomputing the irreducible losses", path)
        return None


# --- phase 1 -----------------------------------------------------------------------------------

def irreducible_run(parts, cfg: RhoConfig, holdout: torch.Tensor) -> SubRun:
    """The nested run that trains (or finishes training) the irreducible-loss model on the holdout."""
    sub_dir = Path(parts.run_dir) / SUB_DIR
    sub_cfg = irreducible_config(parts.cfg, cfg)
    hold_idx = holdout.nonzero().squeeze(1)
    log.info("RHO-LOSS phase 1: training the irreducible-loss model (%s) on %d holdout examples for %d "
             "epochs in %s", sub_cfg.model.name, hold_idx.numel(), cfg.epochs, sub_dir)
    return SubRun(sub_cfg, sub_dir, holdout_data(parts.data, hold_idx, cfg.clean_holdout),
                  what="the irreducible-loss model")


def irreducible_losses(parts, sub: SubRun, holdout: torch.Tensor) -> dict:
    """Score every training example off the holdout with the trained irreducible-loss model.
    Returns the cache: losses, the holdout and the phase's cost (its training and this scoring)."""
    from ..budget import Usage

    final = sub.summary
    t0 = time.perf_counter()
    hold_idx, train_idx = holdout.nonzero().squeeze(1), (~holdout).nonzero().squeeze(1)
    scored = score_examples(sub.parts, parts.data.train.take(train_idx))
    losses = torch.full((holdout.numel(),), float("nan"))
    losses[train_idx] = scored
    score_s = time.perf_counter() - t0
    work = parts.meter.work(Usage(select_forwards=train_idx.numel(), backprops=int(final["total_backprops"])))
    prepared = {"extra_work": work, "extra_time_s": float(final["train_time_s"]) + score_s,
                "holdout": int(hold_idx.numel()), "irreducible_epochs": int(final["epochs_completed"]),
                "irreducible_backprops": int(final["total_backprops"]), "irreducible_forwards": int(train_idx.numel()),
                "irreducible_test_acc": final["final_test_acc"]}
    log.info("RHO-LOSS phase 1 done: irreducible-loss model test_acc %.4f; %.3f work units, %.1f s",
             final["final_test_acc"] or float("nan"), work, prepared["extra_time_s"])
    return {"losses": losses, "holdout": hold_idx, "prepared": prepared}


def irreducible_config(run_cfg, cfg: RhoConfig):
    """The nested run's config: the run's own settings (data, optimizer, schedule, batch size,
    precision, checkpoints) with the irreducible-loss model, its epochs and Traditional training.
    Nothing in it follows the main run's length (epochs, hours, budget), so extending the main
    run never changes the irreducible losses."""
    spec = cfg.model_spec()
    return dataclasses.replace(
        run_cfg, model=spec if spec is not None else run_cfg.model, sampler=TraditionalConfig(), epochs=cfg.epochs,
        budget=BudgetConfig(), hours=None, beta=None,
        # its own initialisation and data order, not the main model's
        seed=derive_seed(run_cfg.seed, "rho", "irreducible") % (2 ** 31),
        plots=False, loss_snapshots=0, extremes=0, name=None, resume=None)


def holdout_data(data, idx: torch.Tensor, clean: bool):
    """The run's data restricted to the holdout (noisy labels included unless `clean`)."""
    train = data.train.take(idx)
    if clean:
        train = ImageSet(train.images, data.true_labels[idx])
    noisy = data.noisy[idx.to(data.noisy.device)]
    return dataclasses.replace(data, train=train, true_labels=data.true_labels[idx],
                               noisy=torch.zeros_like(noisy) if clean else noisy)


def score_examples(p, examples) -> torch.Tensor:
    """Per-example losses of the parts' model on unaugmented examples, in eval mode (the
    reference scores its training set with the irreducible-loss model in eval mode, without
    augmentation). On the CPU."""
    from ..evaluate import batches

    p.model.eval()
    out = []
    with torch.inference_mode():
        for x, y in batches(examples, p, p.cfg.eval_batch_size):
            with p.autocast:
                logits = p.model(x)
            out.append(F.cross_entropy(logits.float(), y, reduction="none").cpu())
    return torch.cat(out) if out else torch.empty(0)

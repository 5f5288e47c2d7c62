"""The training loop: selection forward -> backprop queue -> training step, epoch by epoch.

The loop is sampler-agnostic. Per chunk of example indices it asks the sampler what it needs
(nothing, cached losses, or a selection forward), lets it choose positions, queues the chosen
examples, and steps whenever a full batch waits. Counters stay on the device and are read once
per epoch; the only per-chunk host sync is learning how many examples were chosen.
"""
from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint as ckpt
from . import records
from .config import Config, ConfigError, OptimConfig, check_compatible, to_dict
from .data import ImageSet, corrupt_labels
from .data.builtin import load_dataset
from .distributed import Collective
from .models import CONVOLUTIONAL, build_model
from .queue import BackpropQueue, Step
from .samplers import Ctx, Need, build_sampler
from .schedule import multistep_lr
from .seeding import derive_seed, generator, global_rng_state, seed_globals, set_global_rng_state
from .data.stream import Augmenter, LoaderStream, TensorStream, eval_batches, fits_on_device
from .timing import PhaseTimer

log = logging.getLogger("sbrun")

NAN_CHECK_EVERY = 64   # steps between host reads of the non-finite-loss flag


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class StopRequested(Exception):
    """A stop signal arrived; the run stopped cleanly after a checkpoint."""

    def __init__(self, message: str, signum: Optional[int] = None):
        super().__init__(message)
        self.signum = signum


def build_optimizer(model: torch.nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """The paper's optimizer: SGD with (Nesterov) momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                           weight_decay=o.weight_decay)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The torch device for `device=`; under torchrun, auto/cuda mean this rank's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r} is invalid: no CUDA GPU is visible; allowed here: auto, cpu")
        dev = torch.device(spec if spec != "cuda" else f"cuda:{local_rank}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec!r} is invalid: only {torch.cuda.device_count()} GPU(s); "
                              f"allowed: cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return dev
    return torch.device("cpu")


class _StopFlag:
    """Turns stop signals into a flag the loop checks between chunks.

    SIGINT (Ctrl-C), SIGTERM (plain pre-emption) and SIGUSR2 (SLURM's warning before a time limit
    or pre-emption, as the submitit launcher asks for) all mean: finish the current chunk, write a
    checkpoint, exit with status 3. SIGTERM is left alone where a launcher already handles it
    (submitit ignores it and waits for SIGUSR2); SIGUSR2 is passed on afterwards (cli._pass_on),
    so submitit still requeues the job, which then resumes from the checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                current = signal.getsignal(sig)
                if sig == signal.SIGTERM and callable(current):
                    continue
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread (e.g. a launcher's worker thread)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:      # a second signal: stop waiting
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: finishing the current batch, then checkpointing",
                    signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class EpochState:
    """What an epoch in progress has accumulated; saved in mid-epoch checkpoints."""
    epoch: int
    chunk: int = 0                 # next chunk to process
    backprops: int = 0
    select_forwards: int = 0
    steps: int = 0
    global_backprops: int = 0      # all ranks' backprops this epoch (lr position by backprops)
    phases: Dict[str, float] = field(default_factory=dict)   # seconds before a resume
    loss_sum: Optional[torch.Tensor] = None
    mislabeled: Optional[torch.Tensor] = None
    gen_states: Optional[Dict[str, torch.Tensor]] = None     # selection/augmentation streams

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, device: torch.device,
                 dist: Optional[Collective] = None, overrides: Sequence[str] = ()):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.dist = dist or Collective.single()
        self.overrides = list(overrides)
        self.main = self.dist.rank == 0
        # Rank 0 keeps the run seed, so a 1-process run is unchanged; DDP copies rank 0's weights.
        seed_globals(cfg.seed if self.main else derive_seed(cfg.seed, "rank", self.dist.rank))
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

        data = load_dataset(cfg.dataset, cfg.data_dir)
        self.classes = data.classes
        self.true_labels = data.train.labels
        labels, noisy = corrupt_labels(data.train.labels, cfg.dataset.num_classes, cfg.label_noise,
                                       cfg.seed, cfg.noise_mode)
        self.train_set = ImageSet(data.train.images, labels)
        self.test_set = data.test
        self.n = len(self.train_set)
        self.noisy = noisy.to(device)

        conv = cfg.model.name in CONVOLUTIONAL
        self.memory_format = (torch.channels_last if conv and cfg.channels_last and device.type == "cuda"
                              else torch.contiguous_format)
        use_tensor = cfg.data_path == "tensor" or (
            cfg.data_path == "auto" and fits_on_device(self.train_set, self.test_set, device=device))
        shard = self.dist.shard(self.n)
        if use_tensor:
            self.stream = TensorStream(self.train_set, cfg.dataset, cfg.seed, device, shard, self.memory_format)
        else:
            self.stream = LoaderStream(self.train_set, cfg.dataset, cfg.seed, device, shard,
                                       self.memory_format, cfg.num_workers)
        self.data_path = "tensor" if use_tensor else "loader"
        self.test_aug = Augmenter(cfg.dataset, device)
        self.test_on_device = (self.test_set if not use_tensor else
                               ImageSet(self.test_set.images.to(device), self.test_set.labels.to(device)))

        ds = cfg.dataset
        self.input_shape = (ds.channels, ds.image_size, ds.image_size)
        self.model = build_model(cfg.model, ds.channels, ds.image_size, ds.num_classes).to(device)
        self.model = self.model.to(memory_format=self.memory_format)
        # `net` trains (DDP-wrapped under torchrun); selection forwards and evaluation use the bare
        # module, whose weights are identical on every rank, so they need no collectives.
        self.net = self.dist.wrap(self.model)
        self.scorer = self.model
        # With compile=true, full training batches and full selection chunks run compiled graphs of
        # one fixed shape each (built by the warm-up); the odd-sized final flush or last chunk and
        # the evaluation run eagerly, so nothing recompiles inside a timed epoch.
        self.compiled = {}
        if cfg.compile:
            self.compiled = {"train": torch.compile(self.net), "select": torch.compile(self.scorer)}
        self.optimizer = build_optimizer(self.model, cfg.optim)
        # Batch sizes are global; each rank holds its share of every selection chunk.
        self.local_batch = self.dist.local_size(cfg.batch_size)
        self.sampler = build_sampler(cfg.sampler, self.n, self.local_batch, device, self.dist)
        self.chunk = self.sampler.chunk_size(self.dist.local_size(cfg.select_size))
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if cfg.precision == "bf16" and device.type == "cuda" else nullcontext())
        self.timer = PhaseTimer(device)
        self.environment = records.environment(device)

        # Per-example state, indexed by training-set position.
        self.last_loss = torch.full((self.n,), math.inf, device=device)  # most recent known loss
        self.counts = torch.zeros(self.n, dtype=torch.int64, device=device)  # times backpropagated
        self.select_gen: Optional[torch.Generator] = None
        self.queue = BackpropQueue(cfg.batch_size, self.dist.rank)
        self.metrics = records.MetricsLog(self.run_dir)
        self.snapshots: Dict[str, torch.Tensor] = {}
        self.epoch = 0                       # next epoch to run
        self.totals = {"select_forwards": 0, "backprops": 0, "steps": 0, "train_time": 0.0,
                       "wall_time": 0.0}
        self.compile_warmup_s = 0.0
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self._steps_since_check = 0
        self.lr = cfg.optim.lr

    # --- learning rate -------------------------------------------------------------------------

    def _set_lr(self, position: float) -> None:
        s = self.cfg.schedule
        self.lr = multistep_lr(position, self.cfg.optim.lr, s.milestones, s.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    # --- one chunk, one step ---------------------------------------------------------------------

    def _losses(self, kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example losses from the training ("train") or selection ("select") network."""
        net = self.net if kind == "train" else self.scorer
        full = self.local_batch if kind == "train" else self.chunk
        if kind in self.compiled and x.shape[0] == full:
            net = self.compiled[kind]
            if x.storage_offset():      # a view into the queue: give the graph a fresh tensor
                x = x.clone()
        with self.autocast:
            out = net(x)
        return F.cross_entropy(out.float(), y, reduction="none")

    def _select_forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.scorer.eval()
        with torch.inference_mode():
            return self._losses("select", self.sampler.transform(x), y).clone()

    def _train_step(self, step: Step, state: EpochState) -> None:
        cfg = self.cfg
        if cfg.schedule.by == "backprops":
            self._set_lr((self.totals["backprops"] + state.global_backprops) / self.n)
        state.global_backprops += step.total
        state.steps += 1
        if step.idx.numel():
            self._backprop(step, state)
        else:
            self._empty_step()
        # Every rank counts every step, so the (collective) divergence check stays in lockstep.
        if cfg.nan_check:
            self._steps_since_check += 1
            if self._steps_since_check >= NAN_CHECK_EVERY:
                self._check_finite()

    def _backprop(self, step: Step, state: EpochState) -> None:
        t = self.timer
        self.net.train()
        with t.phase("train_fwd"):
            losses = self._losses("train", step.x, step.y)
            weighted = losses if step.w is None else losses * step.w
            # Sum / global count (times world size, which DDP's gradient averaging divides out)
            # gives the mean over every example of the step, however the ranks split it.
            loss = weighted.sum() * (self.dist.world / step.total)
        with t.phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with t.phase("bookkeeping"):
            detached = losses.detach()
            self.last_loss[step.idx] = detached
            self.sampler.observe(detached)
            self.counts.index_add_(0, step.idx, torch.ones_like(step.idx))
            state.loss_sum += detached.sum()
            state.mislabeled += self.noisy[step.idx].sum()
            state.backprops += step.idx.numel()
            self._nonfinite |= ~torch.isfinite(loss.detach())

    def _empty_step(self) -> None:
        """This rank holds none of a global step's examples: it still joins DDP's gradient
        all-reduce, with a zero-weighted dummy forward in eval mode (no batch-norm update)."""
        self.net.eval()
        x = torch.zeros((1, *self.input_shape), device=self.device).contiguous(memory_format=self.memory_format)
        loss = self._losses("train", x, torch.zeros(1, dtype=torch.long, device=self.device)).sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _check_finite(self) -> None:
        self._steps_since_check = 0
        if self.dist.any(bool(self._nonfinite)):
            raise Diverged(f"non-finite training loss in epoch {self.epoch + 1} (lr={self.lr:g}); "
                           f"the run diverged")

    def _run_chunk(self, chunk, state: EpochState, n_chunks: int) -> None:
        """Select from one chunk, queue its choice and take every full step."""
        t = self.timer
        ctx = Ctx(epoch=state.epoch, batch=state.chunk,
                  progress=(state.epoch + state.chunk / n_chunks) / self.cfg.epochs,
                  generator=self.select_gen)
        need = self.sampler.need(ctx)
        x = y = losses = None
        if need is Need.FRESH:
            with t.phase("data"):
                x, y = chunk.images()
            with t.phase("select_fwd"):
                losses = self._select_forward(x, y)
            state.select_forwards += len(chunk)
            with t.phase("bookkeeping"):
                self.last_loss[chunk.idx] = losses
        elif need is Need.CACHED:
            with t.phase("bookkeeping"):
                losses = self.last_loss[chunk.idx]
        with t.phase("bookkeeping"):
            sel = self.sampler.select(losses, len(chunk), ctx)
            idx = chunk.idx if sel.pos is None else chunk.idx[sel.pos]
        with t.phase("data"):
            if x is None:
                x, y = chunk.images(sel.pos)
            elif sel.pos is not None:
                x, y = x[sel.pos], y[sel.pos]
        # One small collective per chunk: every rank's kept count (the step ledger), and whether
        # any rank ran out of its time budget.
        info = self.dist.gather_ints([idx.numel(), int(self._over_budget(state.epoch))])
        self.queue.push(idx, x, y, sel.weight, [r[0] for r in info])
        while (step := self.queue.pop()) is not None:
            self._train_step(step, state)
        if any(r[1] for r in info):
            raise ConfigError(f"hours={self.cfg.hours:g} is too small: the first epoch did not finish "
                              f"within the budget ({self.timer.elapsed():.1f} s so far); allowed: a "
                              f"budget of at least one epoch")

    # --- epochs ----------------------------------------------------------------------------------

    def _new_epoch_state(self, epoch: int) -> EpochState:
        zero = torch.zeros((), device=self.device)
        return EpochState(epoch, loss_sum=zero.clone(), mislabeled=zero.clone())

    def train_epoch(self, state: EpochState, stop: _StopFlag) -> Dict[str, float]:
        cfg = self.cfg
        epoch = state.epoch
        self.stream.start_epoch(epoch)
        self.select_gen = generator(self.device, cfg.seed, "select", self.dist.rank, epoch)
        if state.gen_states is not None:     # resumed mid-epoch: continue the streams
            self.select_gen.set_state(state.gen_states["select"])
            self.stream.set_generator_state(state.gen_states.get("augment"))
        if cfg.schedule.by == "epochs":
            self._set_lr(epoch)
        size = self.chunk
        n_chunks = self.dist.num_chunks(self.n, size)
        self.timer.start_epoch()
        bar = tqdm(total=n_chunks, initial=state.chunk, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=self._bar_disabled(), unit="batch")
        for i, chunk in enumerate(self.stream.chunks(size, n_chunks)):
            if i < state.chunk:          # resumed mid-epoch: these chunks are already done
                continue
            self._run_chunk(chunk, state, n_chunks)
            state.chunk += 1
            bar.update(1)
            if self.dist.any(stop.signal is not None) and state.chunk < n_chunks:
                bar.close()
                self._stop_mid_epoch(state, stop.signal)
        bar.close()
        if (step := self.queue.flush()) is not None:
            self._train_step(step, state)
        if cfg.nan_check:
            self._check_finite()
        phases = self.timer.end_epoch()
        for k, v in state.phases.items():     # time spent before a mid-epoch resume
            phases[k] = phases.get(k, 0.0) + v
        return phases

    def timed_epoch(self, epoch: int):
        """Train one epoch outside `fit` (no evaluation, no outputs), for the benchmark.
        Returns (phase seconds, the epoch's EpochState)."""
        state = self._new_epoch_state(epoch)
        phases = self.train_epoch(state, _StopFlag())
        self.sampler.end_epoch(epoch)
        return phases, state

    def _bar_disabled(self) -> Optional[bool]:
        if not self.main or self.cfg.progress == "off":
            return True
        return None if self.cfg.progress == "auto" else False

    def _over_budget(self, epoch: int) -> bool:
        """Whether the first epoch alone has outrun the time budget (the budget is otherwise
        checked at epoch ends)."""
        hours = self.cfg.hours
        return hours is not None and epoch == 0 and self.timer.elapsed() > hours * 3600

    def evaluate(self):
        self.scorer.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        test = self.dist.shard_set(self.test_on_device)
        with torch.inference_mode():
            for x, y in eval_batches(test, self.test_aug, self.cfg.eval_batch_size, self.device,
                                     self.memory_format):
                with self.autocast:
                    out = self.scorer(x)
                loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
                correct += (out.argmax(1) == y).sum()
                count += y.numel()
        loss_sum, correct, count = self.dist.all_sum(torch.stack([loss_sum, correct, count])).tolist()
        return loss_sum / count, correct / count

    def _epoch_row(self, state: EpochState, phases: Dict[str, float], extra: Dict[str, float],
                   test_loss: float, test_acc: float) -> Dict[str, float]:
        counts = torch.tensor([float(state.backprops), float(state.select_forwards)], device=self.device)
        sums = self.dist.all_sum(torch.cat([torch.stack([state.loss_sum.float(), state.mislabeled.float()]),
                                            counts]))
        loss_sum, mislabeled, backprops, select_fw = sums.tolist()
        tot = self.totals
        tot["backprops"] += int(backprops)
        tot["select_forwards"] += int(select_fw)
        tot["steps"] += state.steps      # every rank takes part in every step
        tot["train_time"] += phases["total"]
        row = {
            "epoch": state.epoch + 1,
            "train_time_s": tot["train_time"],
            "wall_time_s": tot["wall_time"],
            "epoch_time_s": phases["total"],
            "select_forwards": tot["select_forwards"],
            "backprops": tot["backprops"],
            "steps": tot["steps"],
            "examples_seen": (state.epoch + 1) * self.n,
            "backprop_frac": backprops / self.n,
            "lr": self.lr,
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

    # --- the run ---------------------------------------------------------------------------------

    def _summary(self, status: str, **extra) -> Dict:
        rows = self.metrics.rows
        accs = [r["test_acc"] for r in rows]
        out = {
            "status": status,
            "params": run_params(self.cfg),
            "overrides": self.overrides,
            "config": to_dict(self.cfg),
            "epochs_completed": self.epoch,
            "final_test_acc": accs[-1] if accs else None,
            "best_test_acc": max(accs) if accs else None,
            "final_test_error": 1 - accs[-1] if accs else None,
            "total_backprops": self.totals["backprops"],
            "total_select_forwards": self.totals["select_forwards"],
            "total_steps": self.totals["steps"],
            "train_time_s": self.totals["train_time"],
            "wall_time_s": self.totals["wall_time"],
            "compile_warmup_s": self.compile_warmup_s,
            "n_train": self.n,
            "noisy_examples": int(self.noisy.sum()),
            "data_path": self.data_path,
            "world_size": self.dist.world,
            **self.environment,
        }
        out.update(extra)
        return out

    def write_summary(self, status: str, **extra) -> Dict:
        summary = self._summary(status, **extra)
        if self.main:
            records.write_json(self.run_dir / records.SUMMARY, summary)
        return summary

    def fit(self) -> Dict:
        cfg = self.cfg
        wall0 = time.perf_counter() - self.totals["wall_time"]
        state = self._resume_state or self._new_epoch_state(self.epoch)
        self._resume_state = None
        self.write_summary(records.RUNNING)
        self._warmup_compile()
        with _StopFlag() as stop:
            while self.epoch < cfg.epochs:
                if self.dist.any(stop.signal is not None):
                    self._stop(state, stop.signal)
                phases = self.train_epoch(state, stop)
                extra = self.sampler.end_epoch(state.epoch)
                test_loss, test_acc = self.evaluate()
                self.totals["wall_time"] = time.perf_counter() - wall0
                row = self._epoch_row(state, phases, extra, test_loss, test_acc)
                self.epoch += 1
                self._snapshot_losses()
                if self.main:
                    self.metrics.append(row)
                    log.info(self._log_line(row))
                budget_hit = self.dist.any(cfg.hours is not None and
                                           self.totals["train_time"] >= cfg.hours * 3600)
                state = self._new_epoch_state(self.epoch)
                self.save_checkpoint(state)
                self.write_summary(records.RUNNING)
                if budget_hit:
                    log.info("time budget of %g h reached after epoch %d", cfg.hours, self.epoch)
                    break
        self.finish_outputs()
        return self.write_summary(records.FINISHED)

    def _log_line(self, r: Dict) -> str:
        return (f"epoch {r['epoch']:>3}/{self.cfg.epochs}  test_acc {r['test_acc']:.4f}  "
                f"train_loss {r['train_loss']:.4f}  backprop {r['backprop_frac']:.3f}  "
                f"lr {r['lr']:.4g}  time {r['train_time_s']:.1f}s")

    def _stop_mid_epoch(self, state: EpochState, signum: Optional[int]) -> None:
        """Checkpoint the epoch in progress and leave; `resume` continues from this batch."""
        elapsed = self.timer.end_epoch()
        state.phases = {k: elapsed.get(k, 0.0) + state.phases.get(k, 0.0)
                        for k in set(elapsed) | set(state.phases) if k != "total"}
        self.save_checkpoint(state)
        self._stop(state, signum)

    def _stop(self, state: EpochState, signum: Optional[int]) -> None:
        """Leave after a signal; the latest checkpoint holds everything up to `state`."""
        self.finish_outputs()
        self.write_summary(records.STOPPED, stop_reason="signal", resume_hint=f"sbrun resume={self.run_dir}")
        raise StopRequested(f"stopped by signal in epoch {state.epoch + 1}; continue with "
                            f"`sbrun resume={self.run_dir}`", signum)

    def finish_outputs(self) -> None:
        """Per-example counts, extremes and figures (rank 0; also on a graceful stop)."""
        counts = self.dist.all_sum(self.counts)
        last_loss = self.dist.all_min(self.last_loss)
        if not self.main:
            return
        records.write_counts(self.run_dir, counts, self.train_set.labels, self.true_labels,
                             self.noisy, last_loss)
        self._write_extremes(counts.cpu())
        if self.cfg.plots and self.metrics.rows:
            try:
                from .plots import per_run
                per_run(self.run_dir)
            except Exception as err:  # a figure must never cost the run its results
                log.warning("per-run figures failed: %s", err)

    def _write_extremes(self, counts: torch.Tensor) -> None:
        k = min(self.cfg.extremes, self.n // 2)
        if k == 0:
            return
        order = torch.argsort(counts, stable=True)   # ties broken by index: deterministic
        pick = {"least": order[:k], "most": order.flip(0)[:k]}
        arrays = {}
        for name, idx in pick.items():
            arrays[f"{name}_index"] = idx.numpy()
            arrays[f"{name}_images"] = self.train_set.images[idx].numpy()
            arrays[f"{name}_label"] = self.train_set.labels[idx].numpy()
            arrays[f"{name}_true_label"] = self.true_labels[idx].numpy()
            arrays[f"{name}_noisy"] = self.noisy.cpu()[idx].numpy()
            arrays[f"{name}_count"] = counts[idx].numpy()
        arrays["classes"] = self.classes
        records.write_npz(self.run_dir / records.EXTREMES, **arrays)

    def _snapshot_losses(self) -> None:
        """Keep per-example losses at evenly spaced epochs for the loss-CDF figure."""
        k = self.cfg.loss_snapshots
        if k == 0:
            return
        wanted = {max(1, round(self.cfg.epochs * (i + 1) / k)) for i in range(k)}
        if self.epoch in wanted:
            # clone: in one process all_min returns last_loss itself, which keeps changing
            self.snapshots[f"epoch_{self.epoch}"] = self.dist.all_min(self.last_loss).cpu().clone()
            if self.main:
                records.write_npz(self.run_dir / records.SNAPSHOTS,
                                  **{k: v.numpy() for k, v in self.snapshots.items()})

    def _warmup_compile(self) -> None:
        """Build the compiled train and selection graphs outside the timed epochs, then undo
        the side effects (weights, batch-norm statistics, gradients)."""
        if not self.compiled or self.epoch > 0:
            return
        t0 = time.perf_counter()
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.stream.start_epoch(-1)
        x, y = next(iter(self.stream.chunks(max(self.chunk, self.local_batch)))).images()
        self.net.train()
        self._losses("train", x[:self.local_batch], y[:self.local_batch]).sum().backward()
        self.optimizer.zero_grad(set_to_none=True)
        self._select_forward(x[:self.chunk], y[:self.chunk])
        self.model.load_state_dict(saved)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.compile_warmup_s = time.perf_counter() - t0

    # --- checkpoints -----------------------------------------------------------------------------

    _resume_state: Optional[EpochState] = None

    def save_checkpoint(self, state: EpochState) -> None:
        if not self.cfg.checkpoint.enabled:
            return
        payload = self.dist.gather_state(self._local_state())
        if not self.main:
            return
        mid = state.chunk > 0
        full = {
            "format": 1,
            "config": to_dict(self.cfg),
            "world_size": self.dist.world,
            "epoch": state.epoch,
            "chunk": state.chunk if mid else None,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr,
            "totals": dict(self.totals),
            "metrics": self.metrics.rows,
            "snapshots": self.snapshots,
            "noisy": self.noisy.cpu(),
            "labels": self.train_set.labels,
            "epoch_state": state.state_dict() if mid else None,
            "ranks": payload,
            "rng": global_rng_state(),
        }
        ckpt.save(self.run_dir, full, ckpt.tag(state.epoch, state.chunk if mid else None),
                  self.cfg.checkpoint.keep)

    def _local_state(self) -> dict:
        """Per-rank state: sampler, queue, per-example tensors, selection/augmentation streams."""
        gens = None
        if self.select_gen is not None:
            gens = {"select": self.select_gen.get_state()}
            aug = self.stream.generator_state()
            if aug is not None:
                gens["augment"] = aug
        return {"sampler": self.sampler.state_dict(), "queue": self.queue.state_dict(),
                "last_loss": self.last_loss, "counts": self.counts, "gen_states": gens}

    def restore(self, state: dict) -> None:
        check_compatible(state["config"], to_dict(self.cfg), "checkpoint")
        if state["world_size"] != self.dist.world:
            raise ConfigError(f"world size {self.dist.world} is invalid for this checkpoint; allowed: "
                              f"the world size it was written with ({state['world_size']})")
        if not torch.equal(state["noisy"].to(self.device), self.noisy):
            raise ConfigError("label_noise: the checkpoint's noisy-label mask differs from this run's; "
                              "allowed: the dataset, label_noise and seed the run started with")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr = state["lr"]
        self.totals.update(state["totals"])
        self.metrics = records.MetricsLog(self.run_dir, state["metrics"])
        self.snapshots = dict(state["snapshots"])
        self.epoch = int(state["epoch"])
        local = self.dist.scatter_state(state["ranks"])
        self.sampler.load_state_dict(local["sampler"])
        self.queue.load_state_dict(local["queue"], self.device)
        self.last_loss.copy_(local["last_loss"].to(self.device))
        self.counts.copy_(local["counts"].to(self.device))
        set_global_rng_state(state["rng"])
        if state["epoch_state"] is not None:
            es = EpochState(**state["epoch_state"])
            es.loss_sum = es.loss_sum.to(self.device)
            es.mislabeled = es.mislabeled.to(self.device)
            es.gen_states = local["gen_states"]
            self._resume_state = es
        # metrics.csv is rewritten from the checkpoint, so the file and the checkpoint agree even
        # if the process died between writing a row and writing the checkpoint.
        if self.main:
            self.metrics.write()


def run_params(c: Config) -> Dict:
    """The columns that identify a run in merged tables and figure legends."""
    described = build_sampler(c.sampler, 1, c.batch_size, torch.device("cpu")).describe()
    return {"dataset": c.dataset.name, "model": c.model.name, "sampler": c.sampler.name,
            **described, "label_noise": c.label_noise, "seed": c.seed, "batch_size": c.batch_size,
            "epochs": c.epochs, "lr": c.optim.lr}

"""One run's life cycle, callable without the CLI: `train(cfg, run_dir)`.

It decides whether the run directory is new, resumable or finished, builds the parts, restores
the latest checkpoint, starts the callbacks (trackers, the callbacks group, the caller's hooks),
and records a failure's reason in summary.json before re-raising it. A run that fails on bad input
before its first epoch leaves nothing behind.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import checkpoint as ckpt
from . import outputs, records
from . import state as run_state
from .budget import costs_mismatch
from .build import build, resolve_device
from .components import instantiate
from .config import Config, ConfigError
from .data import DataError
from .distributed import Collective, gpu_index
from .fit import StopRequested, fit
from .hooks import Hooks, RunInfo
from .identity import check_compatible, get_dotted, to_dict
from .proxy import proxy_setup
from .samplers import SubRun
from .seeding import global_rng_state, set_global_rng_state

log = logging.getLogger("sbrun")

# Which limit each stop reason refers to: a run that stopped on it is finished unless it is raised.
LIMIT_OF = {"epochs": "epochs", "hours": "hours", "budget": "budget.amount"}


class AlreadyFinished(RuntimeError):
    """The run directory holds a finished run."""


def is_finished(summary: Optional[Dict], current: Optional[Dict] = None) -> bool:
    """The one definition of a finished run: its summary says finished, and (given the config a
    command asks for now) that command does not raise the limit the run stopped on: more epochs
    for a run that ran its epochs, a longer `hours` cap, a larger budget. A run that ended on its
    time cap or budget is finished; re-running the same command skips it."""
    if not summary or summary.get("status") != records.FINISHED:
        return False
    if current is None:
        return True
    limit = LIMIT_OF.get(summary.get("stop_reason") or "epochs", "epochs")
    saved, now = get_dotted(summary.get("config") or {}, limit), get_dotted(current, limit)
    return not _raises(saved, now)


def _raises(saved, now) -> bool:
    if now is None:            # no cap (hours: null) raises any cap
        return saved is not None
    return saved is not None and now > saved


def check_run_dir(run_dir: Path | str, current: Dict) -> Optional[Dict]:
    """The identity check for every way into an existing run directory (a new command under a
    taken name=, a re-run that would skip or extend a finished run, resume=, a sweep job): a
    different experiment is refused naming the key and both values, finished or not. Reads only,
    so a refusal changes nothing on disk. Returns the directory's summary (None: no run there)."""
    summary = records.read_json(Path(run_dir) / records.SUMMARY)
    if summary and "config" in summary:
        check_compatible(summary["config"], current, "run directory")
    return summary


def load_checkpoint(path: Path) -> Dict:
    """A checkpoint's payload; a refused one says what to do next, and nothing has changed."""
    try:
        return ckpt.load(path)
    except ckpt.CheckpointError as err:
        earlier = [c for c in ckpt.listed(path.parent.parent) if c != path]
        again = "start the experiment again under a new name= (or delete the run directory)"
        how = (f"delete {path.name} and {path.with_suffix('.json').name} to resume from {earlier[-1].name}, or {again}"
               if earlier else f"{again}; no earlier checkpoint was kept (checkpoint.keep=N keeps N)")
        raise ckpt.CheckpointError(f"{err}; the run directory is unchanged. Next: {how}") from None


def train(cfg: Config, run_dir: Path | str, overrides: Sequence[str] = (), dist: Optional[Collective] = None,
          hooks: Optional[Hooks] = None, keep_failed: bool = False) -> Dict:
    """Train (or continue) the run in `run_dir` and return its summary. A new run that fails on
    bad input before its first epoch removes its directory, unless `keep_failed` (a sweep job,
    whose failure the sweep reports from its summary.json). An existing run that is refused, or
    fails before training continues (a bad checkpoint, moved data), is left exactly as it was.
    `hooks` and the callbacks group observe this command's part of the run; neither is recorded."""
    run_dir = Path(run_dir)
    previous, latest, overrides = existing_run(run_dir, cfg, [o for o in overrides if top_key(o) != "callbacks"])
    fresh = previous is None and latest is None
    payload = load_checkpoint(latest) if latest is not None else None
    device = resolve_device(cfg.device, gpu_index())
    own_group = dist is None
    dist = dist or Collective.from_env(device)
    main = dist.rank == 0
    parts = run = None
    touched = False        # whether this command has written into the run directory yet
    hooks = Hooks().subscribe(hooks)    # the caller's, copied: the run adds its own
    try:
        check_shared(dist, run_dir, latest)
        parts = build(cfg, run_dir, device, dist, list(overrides))
        run, ep = run_state.RunState.new(parts.n, device, cfg.optim.lr), None
        if payload is not None:
            run, ep = run_state.restore(parts, payload)
            payload = None
            log.info("resuming %s from %s", run_dir, latest.name)
        touched = True
        if latest is None:     # a stop during the sampler's first phase leaves a run `resume=` continues
            outputs.write_summary(parts, run, records.RUNNING)
        # built before the sampler's nested run, whose optimizer steps they see (step_hooks)
        callbacks = list(instantiate(cfg.callbacks, "callbacks").values())
        parts.prepared = prepare_sampler(parts, step_hooks(hooks, *callbacks))
        if latest is None:      # a restored run's totals already hold the first phase's work
            run.totals["extra_work"] = float(parts.prepared.get("extra_work", 0.0))
        start_callbacks(parts, hooks, callbacks, resumed=latest is not None)
        if main and (note := costs_note(parts)):
            log.warning("%s", note)
        if main and (note := proxy_note(parts)):
            log.warning("%s", note)
        hooks.on_epoch.append(training_notes(parts, run))
        return fit(parts, run, ep, hooks)
    except StopRequested:
        if parts is not None and run is not None:
            hooks.call("on_end", records.STOPPED, {})
        raise
    except Exception as err:
        if not main or (not fresh and not touched):
            raise
        if fresh and not keep_failed and isinstance(err, (ConfigError, DataError)) and (run is None or not run.rows):
            discard(run_dir, Path(cfg.out_dir))       # bad input: no half-made run directory
            raise
        record_failure(err, run_dir, cfg, parts, run, hooks)
        raise
    finally:
        if own_group:
            if parts is not None:      # let go of the DDP wrapper first: it holds the group
                parts.net, parts.compiled = None, {}
            dist.close()


def check_shared(dist: Collective, run_dir: Path, latest: Optional[Path]) -> None:
    """Every rank continues from the checkpoint rank 0 wrote, so all of them must see the same one:
    on several nodes, out_dir must be one folder they share (else ranks would restart apart)."""
    seen = dist.gather_objects(None if latest is None else latest.name)
    if len(set(seen)) > 1:
        views = ", ".join(f"rank {r}: {name or 'none'}" for r, name in enumerate(seen))
        raise ConfigError(f"out_dir is invalid for this multi-node run: its ranks see different checkpoints in "
                          f"{run_dir} ({views}); allowed: an out_dir on a filesystem every node shares")


def existing_run(run_dir: Path, cfg: Config, overrides: List[str]) -> Tuple[Optional[Dict], Optional[Path], List[str]]:
    """What `run_dir` holds, checked for this config: its summary (None: no run there), its latest
    checkpoint, and the overrides that identify the run (a continuation keeps those it was
    started with: they identify it in tables). A finished run, or one that cannot continue, is
    refused."""
    previous = check_run_dir(run_dir, to_dict(cfg))
    latest = ckpt.latest(run_dir)
    if previous is not None:
        if is_finished(previous, to_dict(cfg)):
            raise AlreadyFinished(f"{run_dir} already holds a finished run ({previous.get('epochs_completed')} "
                                  f"epochs, stopped on {previous.get('stop_reason') or 'epochs'})")
        if previous.get("epochs_completed") and latest is None:
            raise ConfigError(f"{run_dir} holds {previous['epochs_completed']} epoch(s) but no checkpoint "
                              f"(checkpoint.enabled=false), so it cannot be continued; allowed: another name= or "
                              f"out_dir, or delete that directory")
        overrides = previous.get("overrides") or overrides
    return previous, latest, overrides


def record_failure(err: Exception, run_dir: Path, cfg: Config, parts, run, hooks: Hooks) -> None:
    """The failure's reason in summary.json (and the callbacks' end), best effort."""
    reason = f"{type(err).__name__}: {err}"
    try:
        if parts is not None and run is not None:
            summary = outputs.write_summary(parts, run, records.FAILED, reason=reason)
            hooks.call("on_end", records.FAILED, summary)
        else:
            records.write_json(run_dir / records.SUMMARY, {"status": records.FAILED, "reason": reason,
                                                           "config": to_dict(cfg), "params": outputs.run_params(cfg)})
    except records.OutputError:
        pass   # the original error is the one to report


def prepare_sampler(parts, hooks: Hooks) -> Dict:
    """The sampler's first phase: the nested run it asks for, if any, trained here (calling
    `hooks`), then its `prepare`. A nested run reseeds and draws from the global RNGs; the main
    run must not notice, so that a restart (which skips the phase once the sampler has cached its
    result) continues it identically."""
    sub = parts.sampler.sub_run(parts)
    if sub is None:
        return parts.sampler.prepare(parts)
    rng = global_rng_state()
    try:
        train_sub_run(parts, sub, hooks)
        return parts.sampler.prepare(parts, sub)
    finally:
        set_global_rng_state(rng)


def step_hooks(*callbacks) -> Hooks:
    """The step events of this command's callbacks, for a sampler's nested run: its optimizer
    steps are the command's too (a kill after step k counts them); its rows and end are its own."""
    every = Hooks().subscribe(*callbacks)
    return Hooks(before_step=every.before_step, after_step=every.after_step)


def train_sub_run(parts, sub: SubRun, hooks: Hooks) -> None:
    """Train (or finish training, from its latest checkpoint) a sampler's nested run, on the
    main run's device and process group; fills in its trained parts and final summary."""
    run_dir = Path(sub.run_dir)
    p = build(sub.cfg, run_dir, parts.device, parts.dist, data=sub.data)
    run, ep = run_state.RunState.new(p.n, p.device, sub.cfg.optim.lr), None
    latest = ckpt.latest(run_dir)
    if latest is not None:
        run, ep = run_state.restore(p, ckpt.load(latest))
        log.info("resuming %s from %s", sub.what, latest.name)
    try:
        sub.summary = fit(p, run, ep, hooks)
    except StopRequested as err:
        raise StopRequested(f"stopped by signal while training {sub.what} (its state is checkpointed in "
                            f"{run_dir}); continue with `sbrun resume={parts.run_dir}`, or the same command again "
                            f"with name=", err.signum) from None
    sub.parts = p


def costs_note(parts) -> Optional[str]:
    """One line when budget.costs was measured on another setup than this run's (model, image
    shape, precision): its cost ratio, and so the work budget, may not apply."""
    cfg = parts.cfg
    if not cfg.budget.costs:
        return None
    measured = records.read_json(Path(cfg.budget.costs)) or {}
    here = {"dataset": cfg.dataset.name, "model": cfg.model.name, "model_kwargs": dict(cfg.model.kwargs),
            "image_size": parts.data.spec.image_size, "channels": parts.data.spec.channels,
            "precision": parts.effective["precision"],
            "scoring": {"scale": cfg.scoring.scale, "precision": parts.effective["scoring_precision"]}}
    if parts.proxy is not None:
        here["proxy"] = proxy_setup(cfg.scoring.proxy)
    differs = costs_mismatch(measured, here)
    return (f"warning: budget.costs={cfg.budget.costs} was measured on another setup ({differs}); its cost ratio "
            f"may not hold for this run: measure this one with sbrun-bench, or give budget.cost_select and "
            f"budget.cost_train") if differs else None


def proxy_note(parts) -> Optional[str]:
    """One line when a work budget charges a proxy scorer its multiply-add ratio, which small
    networks on a CPU do not reach in time (README, Proxy scoring)."""
    e = parts.effective
    if parts.cfg.budget.unit != "work" or e.get("proxy_cost_from") != "multiply-adds":
        return None
    return (f"note: work charges the proxy scorer its multiply-add ratio ({e['proxy_cost']:.3g}x the main model); "
            f"a small network may cost more than that in time: measure it with `sbrun-bench --proxy F` and give "
            f"budget.costs=<out>/costs_proxy.json")


# A training loss this many times its first epoch's value reads as divergence.
DIVERGENCE_FACTOR = 10.0


def training_notes(parts, run: run_state.RunState) -> Callable[[Dict], None]:
    """An on_epoch hook that says, once per run and as a warning line, what a metrics row alone
    would hide: a training loss grown tenfold over its first value (the learning rate is the
    usual cause), and an epoch with nothing backpropagated because every known loss is 0."""
    def note(row: Dict) -> None:
        if parts.dist.rank != 0:
            return
        earlier = run.rows[:-1]
        losses = [r["train_loss"] for r in run.rows if math.isfinite(r["train_loss"])]
        grown = [x for x in losses[1:] if x > DIVERGENCE_FACTOR * losses[0] > 0]
        if len(grown) == 1 and grown[0] == row["train_loss"]:        # the first time only
            log.warning("warning: train_loss %.4g in epoch %d is over %gx its first value %.4g: the run may be "
                        "diverging; try a smaller optim.lr (now %g)", row["train_loss"], row["epoch"],
                        DIVERGENCE_FACTOR, losses[0], parts.cfg.optim.lr)
        if row["backprop_frac"] == 0 and all(r["backprop_frac"] > 0 for r in earlier):
            seen = run.last_loss[torch.isfinite(run.last_loss)]
            why = ("every training loss is exactly 0 (the model fits the training set), so the rule has "
                   "nothing to prefer" if seen.numel() and not seen.any() else "the sampler chose no example")
            log.warning("note: nothing was backpropagated in epoch %d: %s; train_loss is empty, not diverged",
                        row["epoch"], why)
    return note


def start_callbacks(parts, hooks: Hooks, callbacks: Sequence, resumed: bool) -> None:
    """Subscribe the trackers (logger=..., rank 0 only; a resumed run continues the same tracker
    runs) and the callbacks group's objects to the run's hooks, and start them all."""
    from .trackers import STATE_FILE, build

    if not resumed and parts.dist.rank == 0:   # a run that starts over also starts new tracker runs
        (parts.run_dir / STATE_FILE).unlink(missing_ok=True)
    hooks.subscribe(*build(parts.cfg.logger), *callbacks)
    config = json.loads(json.dumps(to_dict(parts.cfg), default=str))    # JSON types, as summary.json holds it
    hooks.start(RunInfo(parts.run_dir, config, parts.run_dir.name, parts.dist.rank))


def top_key(override: str) -> str:
    """The top-level key an override sets (`+callbacks.spy._target_=...` -> callbacks)."""
    return override.split("=", 1)[0].lstrip("+~").split(".", 1)[0]


def discard(run_dir: Path, out_dir: Path) -> None:
    """Remove a run directory this command created but never trained in (Hydra's own files and
    whatever the failed start wrote), and the folders above it up to out_dir that are left empty."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = Path(out_dir).absolute().parent
    parent = run_dir.absolute().parent
    while parent != stop and parent != parent.parent:
        try:
            parent.rmdir()          # only succeeds on an empty folder
        except OSError:
            break
        parent = parent.parent

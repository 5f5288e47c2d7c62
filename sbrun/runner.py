"""One run's life cycle, callable without the CLI: `train(cfg, run_dir)`.

It decides whether the run directory is new, resumable or finished, builds the parts, restores
the latest checkpoint, attaches the trackers, and records a failure's reason in summary.json
before re-raising it. A run that fails on bad input before its first epoch leaves nothing behind.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

from . import checkpoint as ckpt
from . import outputs, records
from . import state as run_state
from .build import build, resolve_device
from .config import Config, ConfigError, check_compatible, get_dotted, to_dict
from .data import DataError
from .distributed import Collective, local_rank
from .fit import StopRequested, fit
from .hooks import Hooks, merged

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


def train(cfg: Config, run_dir: Path | str, overrides: Sequence[str] = (), dist: Optional[Collective] = None,
          hooks: Optional[Hooks] = None, keep_failed: bool = False) -> Dict:
    """Train (or continue) the run in `run_dir` and return its summary. A new run that fails on
    bad input before its first epoch removes its directory, unless `keep_failed` (a sweep job,
    whose failure the sweep reports from its summary.json)."""
    run_dir = Path(run_dir)
    previous = records.read_json(run_dir / records.SUMMARY)
    fresh = previous is None
    if previous is not None:
        if is_finished(previous, to_dict(cfg)):
            raise AlreadyFinished(f"{run_dir} already holds a finished run ({previous.get('epochs_completed')} "
                                  f"epochs, stopped on {previous.get('stop_reason') or 'epochs'})")
        if "config" in previous:
            check_compatible(previous["config"], to_dict(cfg), "run directory")
        if previous.get("epochs_completed") and ckpt.latest(run_dir) is None:
            raise ConfigError(f"{run_dir} holds {previous['epochs_completed']} epoch(s) but no checkpoint "
                              f"(checkpoint.enabled=false), so it cannot be continued; allowed: another name= or "
                              f"out_dir, or delete that directory")
        # A continuation keeps the overrides the run was started with (they identify it in tables).
        overrides = previous.get("overrides") or overrides
    device = resolve_device(cfg.device, local_rank())
    own_group = dist is None
    dist = dist or Collective.from_env(device)
    main = dist.rank == 0
    parts = run = None
    hooks = merged(hooks)
    try:
        parts = build(cfg, run_dir, device, dist, list(overrides))
        run, ep = run_state.RunState.new(parts.n, device, cfg.optim.lr), None
        latest = ckpt.latest(run_dir)
        if latest is not None:
            run, ep = run_state.restore(parts, ckpt.load(latest))
            log.info("resuming %s from %s", run_dir, latest.name)
        if latest is None:     # a stop during the sampler's first phase leaves a run `resume=` continues
            outputs.write_summary(parts, run, records.RUNNING)
        parts.prepared = parts.sampler.prepare(parts)
        if latest is None:      # a restored run's totals already hold the first phase's work
            run.totals["extra_work"] = float(parts.prepared.get("extra_work", 0.0))
        attach_trackers(parts, hooks, resumed=latest is not None)
        return fit(parts, run, ep, hooks)
    except StopRequested:
        if parts is not None and run is not None:
            hooks.call("on_end", records.STOPPED, {})
        raise
    except Exception as err:
        if not main:
            raise
        if fresh and not keep_failed and isinstance(err, (ConfigError, DataError)) and (run is None or not run.rows):
            discard(run_dir, Path(cfg.out_dir))       # bad input: no half-made run directory
            raise
        reason = f"{type(err).__name__}: {err}"
        try:
            if parts is not None and run is not None:
                summary = outputs.write_summary(parts, run, records.FAILED, reason=reason)
                hooks.call("on_end", records.FAILED, summary)
            else:
                records.write_json(run_dir / records.SUMMARY, {"status": records.FAILED, "reason": reason,
                                                               "config": to_dict(cfg),
                                                               "params": outputs.run_params(cfg)})
        except records.OutputError:
            pass   # the original error is the one to report
        raise
    finally:
        if own_group:
            dist.close()


def attach_trackers(parts, hooks: Hooks, resumed: bool) -> None:
    """Experiment trackers (logger=...) follow the run on rank 0: every metrics row, then the
    figures and tables when it ends; a resumed run continues the same tracker run."""
    chosen = {k: v for k, v in (parts.cfg.logger or {}).items() if k != "csv" and v is not None}
    if not chosen:
        return
    from .trackers import open_trackers
    from .trackers.fanout import STATE_FILE

    if not resumed:     # a run that starts over also starts new tracker runs
        (parts.run_dir / STATE_FILE).unlink(missing_ok=True)
    config = to_dict(parts.cfg)
    trackers = open_trackers(chosen, parts.run_dir, config, parts.run_dir.name, enabled=parts.dist.rank == 0)
    hooks.on_epoch.append(lambda row: trackers.log_epoch(row, int(row["epoch"])))

    def finish(status: str, summary: Dict) -> None:
        d = parts.run_dir
        artifacts = sorted((d / "figures").glob("*.png")) + [d / n for n in (records.COUNTS, records.SUMMARY,
                                                                           records.METRICS) if (d / n).exists()]
        trackers.finish(status, artifacts)
    hooks.on_end.append(finish)


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

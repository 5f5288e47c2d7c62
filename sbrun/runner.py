"""One run's life cycle, callable without the CLI: `train(cfg, run_dir)`.

It decides whether the run directory is new, resumable or finished, builds the Trainer, restores
the latest checkpoint, and records a failure's reason in summary.json before re-raising it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

from omegaconf import OmegaConf

from . import checkpoint as ckpt
from . import records
from .config import RESUMABLE_KEYS, Config, ConfigError, check_compatible, to_dict, validate
from .distributed import Collective, local_rank
from .engine import StopRequested, Trainer, resolve_device, run_params

log = logging.getLogger("sbrun")


class AlreadyFinished(RuntimeError):
    """The run directory holds a finished run."""


def saved_config(run_dir: Path) -> Dict:
    """The config a run directory was started with (from its summary.json)."""
    summary = records.read_json(Path(run_dir) / records.SUMMARY)
    if not summary or "config" not in summary:
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: no sbrun run there (summary.json is "
                          f"missing or unreadable); allowed: a run directory sbrun wrote")
    return summary["config"]


def resume_config(run_dir: Path, changes: Dict[str, object]) -> Config:
    """The saved config of `run_dir` with the allowed `changes` (dotted keys) applied."""
    bad = sorted(k for k in changes if k.split(".")[0] not in RESUMABLE_KEYS)
    if bad:
        raise ConfigError(f"{bad[0]} cannot change when resuming; allowed with resume=: "
                          f"{', '.join(sorted(RESUMABLE_KEYS - {'resume'}))}")
    cfg = OmegaConf.create(saved_config(run_dir))
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    cfg.resume = str(run_dir)
    return validate(cfg)


def finished_epochs(summary: Optional[Dict], epochs: int) -> Optional[int]:
    """Epochs done if `summary` is of a finished run with at least `epochs` of them, else None."""
    done = (summary or {}).get("epochs_completed") or 0
    if (summary or {}).get("status") == records.FINISHED and done >= epochs:
        return done
    return None


def _failure_summary(cfg: Config, reason: str) -> Dict:
    return {"status": records.FAILED, "reason": reason, "config": to_dict(cfg),
            "params": run_params(cfg)}


def train(cfg: Config, run_dir: Path | str, overrides: Sequence[str] = (),
          dist: Optional[Collective] = None) -> Dict:
    """Train (or continue) the run in `run_dir` and return its summary."""
    run_dir = Path(run_dir)
    previous = records.read_json(run_dir / records.SUMMARY)
    if previous is not None:
        done = finished_epochs(previous, cfg.epochs)
        if done is not None:
            raise AlreadyFinished(f"{run_dir} already holds a finished run ({done} epochs)")
        if "config" in previous:
            check_compatible(previous["config"], to_dict(cfg), "run directory")
        # A continuation keeps the overrides the run was started with (they identify it in tables).
        overrides = previous.get("overrides") or overrides
    trainer = None
    device = resolve_device(cfg.device, local_rank())
    own_group = dist is None
    dist = dist or Collective.from_env(device)
    main = dist.rank == 0
    try:
        trainer = Trainer(cfg, run_dir, device, dist, overrides)
        latest = ckpt.latest(run_dir)
        if latest is not None:
            trainer.restore(ckpt.load(latest))
            log.info("resuming %s from %s", run_dir, latest.name)
        return trainer.fit()
    except Exception as err:
        if isinstance(err, StopRequested) or not main:
            raise
        reason = f"{type(err).__name__}: {err}"
        try:
            if trainer is not None:
                trainer.write_summary(records.FAILED, reason=reason)
            else:
                records.write_json(run_dir / records.SUMMARY, _failure_summary(cfg, reason))
        except records.OutputError:
            pass   # the original error is the one to report
        raise
    finally:
        if own_group:
            dist.close()

"""`sbrun`: the Hydra command line.

`main` runs the preflight (sbrun/preflight.py: every job composed and validated before anything
runs), then hands the command to Hydra, whose task trains each job with `runner.train` and turns
its errors into exit codes and one line each.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import hydra
from omegaconf import DictConfig

from .checkpoint import CheckpointError
from .compose import config_dir, run_id, validate
from .config import Config, ConfigError
from .data import DataError
from .preflight import preflight
from .records import OutputError
from .resume import resume_config, resume_overrides

log = logging.getLogger("sbrun")

# Exit codes: 0 done, 1 a run failed, 2 bad input, 3 stopped by a signal (resumable).
EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 1, 2, 3


# --- the Hydra task -------------------------------------------------------------------------------

def _job_config(cfg: DictConfig, overrides: Sequence[str]) -> Config:
    if cfg.get("resume"):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return resume_config(Path(cfg.resume), resume_overrides(parsed))
    return validate(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> Optional[Dict]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .distributed import launched_by_torchrun
    from .fit import StopRequested
    from .loop import Diverged
    from .runner import AlreadyFinished, train

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    user_errors = (ConfigError, DataError, CheckpointError, OutputError, Diverged, AlreadyFinished)
    try:
        if multirun and job_ranks(hc.launcher) > 1:
            _join_job_ranks()
        config = _job_config(cfg, overrides)
        if multirun and not launched_by_torchrun():
            config = _pin_gpu(config, hc.job.num)
        return train(config, config.resume or run_dir, overrides, keep_failed=multirun)
    except AlreadyFinished as err:
        # re-running a command is idempotent: a finished run is skipped (a larger epochs=, hours=
        # or budget.amount= continues it)
        log.info("skipping %s: %s", run_dir, err)
        return None
    except StopRequested as err:
        log.warning("%s", err)
        pass_on(err.signum)
        raise SystemExit(EXIT_STOPPED) from None
    except user_errors as err:
        code = EXIT_USAGE if isinstance(err, (ConfigError, DataError, CheckpointError)) else EXIT_FAILED
        if multirun:    # the job's summary.json records the failure; the sweep goes on
            log.error("job %s failed: %s", run_dir.name, err)
            return None
        _exit(str(err), code)
    except Exception:
        if multirun:    # keep the sweep going; the traceback goes to this job's run.log
            log.exception("job %s failed", run_dir.name)
            return None
        raise
    return None


def job_ranks(launcher) -> int:
    """How many ranks one job of a submitit launcher runs, nodes x tasks_per_node (hydra/launcher=slurm_ddp;
    submitit_local with tasks_per_node > 1); 1 for any other launcher."""
    if not str(launcher.get("_target_", "")).startswith("hydra_plugins.hydra_submitit_launcher."):
        return 1
    return int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)


def _join_job_ranks() -> None:
    """Each task of the job is one rank of its run: take torchrun's variables from submitit's view of
    the job, and leave run.log to rank 0 (the other ranks still print to their own submitit logs)."""
    from .distributed import export_submitit_env

    export_submitit_env()
    if int(os.environ["RANK"]) > 0:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()


def _pin_gpu(config: Config, job_num: int) -> Config:
    """In a local parallel sweep on a multi-GPU machine, job k trains on GPU k mod #GPUs."""
    import torch

    count = torch.cuda.device_count()
    if config.device in ("auto", "cuda") and count > 1:
        return dataclasses.replace(config, device=f"cuda:{job_num % count}")
    return config


def pass_on(signum: Optional[int]) -> None:
    """After a clean stop, hand the signal to whoever else listens for it: under SLURM, the
    submitit launcher's handler requeues the job, which then resumes from our checkpoint."""
    if signum is None or signum == signal.SIGINT:
        return
    handler = signal.getsignal(signum)
    if callable(handler):
        signal.raise_signal(signum)


def _exit(message: str, code: int) -> None:
    print(f"sbrun: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _torchrun_argv(argv: List[str]) -> List[str]:
    """Under torchrun: one run, one directory (rank 0's timestamp), and only rank 0 writes
    Hydra's files and logs."""
    from .distributed import agree_on, init_process_group

    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("--multirun is invalid under torchrun; allowed: one run per torchrun launch "
                          "(sweep with hydra/launcher=slurm or local_parallel instead)")
    init_process_group()
    os.environ["SBRUN_RUN_ID"] = agree_on(run_id())
    if int(os.environ.get("RANK", "0")) > 0:
        argv = argv + ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                       "hydra/hydra_logging=disabled"]
    return argv


def main(argv: Optional[Sequence[str]] = None) -> None:
    from . import sweep
    from .distributed import launched_by_torchrun

    argv = list(sys.argv[1:] if argv is None else argv)
    sweep.last_report = None
    if os.getcwd() not in sys.path:      # `model._target_=my_pkg.Net`: the current directory counts
        sys.path.insert(0, os.getcwd())
    try:
        argv = preflight(argv)
        if launched_by_torchrun():
            argv = _torchrun_argv(argv)
    except (ConfigError, CheckpointError) as err:
        _exit(str(err), EXIT_USAGE)
    sys.argv = [sys.argv[0]] + argv
    _hydra_main()
    failed = (sweep.last_report or {}).get("failed", [])
    if failed:
        print(f"sbrun: {len(failed)} job(s) failed:", file=sys.stderr)
        for job in failed:
            print(f"  {job['job']}: {job['reason']}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED)


if __name__ == "__main__":
    main()

"""`sbrun`: the Hydra command line.

Before Hydra runs anything, `preflight` parses the overrides, composes every job of the command
(each combination of a sweep) and validates it, so a typo or an out-of-range value stops the
command with one line naming the key and what is allowed, before any data or model is touched.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import re
import sys
import zlib
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from .checkpoint import CheckpointError
from .config import ConfigError, Config, register_schema, validate
from .data import DataError
from .engine import Diverged, StopRequested, resolve_device
from .records import SUMMARY, OutputError, read_json
from .runner import AlreadyFinished, finished_epochs, resume_config, train

log = logging.getLogger("sbrun")

GROUPS = ("dataset", "model", "sampler", "optim", "schedule", "experiment", "debug")
MAX_PREFLIGHT_JOBS = 512
# Exit codes: 0 done, 1 a run failed, 2 bad input, 3 stopped by a signal (resumable).
EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 1, 2, 3
USER_ERRORS = (ConfigError, DataError, CheckpointError, OutputError, Diverged, AlreadyFinished)

# --- Hydra resolvers used by conf/config.yaml ----------------------------------------------------

def _run_id(name: Optional[str] = None) -> str:
    """The run/sweep directory name: `name=` if given, else a sub-second timestamp (under torchrun,
    rank 0's, shared through SBRUN_RUN_ID)."""
    if name:
        return str(name)
    return os.environ.get("SBRUN_RUN_ID") or datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def _job_dir(num, overrides: str = "") -> str:
    """<job number>_<overrides>, made safe as one directory name."""
    slug = re.sub(r"[^A-Za-z0-9=,._+-]", "_", str(overrides or ""))
    if len(slug) > 100:
        slug = f"{slug[:90]}~{zlib.crc32(slug.encode()):08x}"
    return f"{num}_{slug}" if slug else str(num)


def _parallel_jobs() -> int:
    """Default job count of the local_parallel launcher: one per GPU, else 2."""
    import torch

    return torch.cuda.device_count() or 2


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sbrun_id"):
        OmegaConf.register_new_resolver("sbrun_id", _run_id, use_cache=True)
    if not OmegaConf.has_resolver("sbrun_job"):
        OmegaConf.register_new_resolver("sbrun_job", _job_dir)
    if not OmegaConf.has_resolver("sbrun_parallel_jobs"):
        OmegaConf.register_new_resolver("sbrun_parallel_jobs", _parallel_jobs)


register_resolvers()
register_schema()


# --- preflight -----------------------------------------------------------------------------------

def config_dir() -> Path:
    return Path(str(resources.files("sbrun") / "conf"))


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__


def _compose_error(err: BaseException) -> ConfigError:
    cause = err.__cause__ or err
    text = f"{err}\n{cause}"
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        return ConfigError(f"{m.group(1)} is not a config key; allowed: the keys listed in README.md "
                           f"(Configuration) or shown by `sbrun --cfg job`")
    m = re.search(r"full_key: (\S+)", text)
    if m:   # a type error, e.g. "Value 'abc' of type 'str' could not be converted to Integer"
        return ConfigError(f"{m.group(1)}: {str(cause).splitlines()[0].strip()}")
    return ConfigError(_first_line(err))


def _job_overrides(parsed) -> List[List[str]]:
    """Every job's override list (the sweep's cartesian product), capped for very large sweeps."""
    axes = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            try:
                axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            except Exception:   # interval/optimizer sweeps: nothing to enumerate
                continue
        else:
            axes.append([o.input_line])
    jobs = list(itertools.islice(itertools.product(*axes), MAX_PREFLIGHT_JOBS))
    return [list(j) for j in jobs] or [[]]


def _check_groups(parsed) -> None:
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        allowed = group_options(group)
        for v in values:
            if v is not None and str(v) not in allowed:
                raise ConfigError(f"{group}={v} is not a known {group}; allowed: {', '.join(allowed)}")


LAUNCHER_PLUGINS = {"slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "local_parallel": "hydra_plugins.hydra_joblib_launcher",
                    "joblib": "hydra_plugins.hydra_joblib_launcher"}


def _local_launcher(parsed) -> bool:
    """Whether the jobs run on this machine; the launcher's plugin must be installed."""
    import importlib.util

    for o in parsed:
        if o.key_or_group == "hydra/launcher":
            name = str(o.value())
            plugin = LAUNCHER_PLUGINS.get(name)
            if plugin and importlib.util.find_spec(plugin) is None:
                raise ConfigError(f"hydra/launcher={name} needs its Hydra plugin; allowed: basic, or install "
                                  f"the cluster extra (pip install 'sbrun[cluster]')")
            return name in ("basic", "local_parallel", "joblib", "submitit_local")
    return True


def preflight(argv: Sequence[str]) -> List[str]:
    """Validate every job the command would run; return the argv to hand to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = get_args_parser().parse_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion \
            or args.config_name or args.config_path or args.config_dir or args.experimental_rerun:
        return list(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as err:
        raise ConfigError(f"cannot parse the overrides: {_first_line(err)}") from None
    _check_groups(parsed)
    user = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    resume = next((o for o in user if o.key_or_group == "resume"), None)
    if resume is not None and resume.value() not in (None, "null"):
        return _preflight_resume(argv, args, user, resume)
    local = _local_launcher(parsed)
    out_dirs = set()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="sbrun"):
        for job in _job_overrides(user):
            try:
                cfg = validate(compose("config", overrides=job))
            except ConfigError:
                raise
            except Exception as err:
                raise _compose_error(err) from None
            if local:
                resolve_device(cfg.device)
            out_dirs.add(cfg.out_dir)
    for out in sorted(out_dirs):
        _check_writable(Path(out))
    return list(argv)


def _check_writable(out_dir: Path) -> None:
    """out_dir must be a directory this process can create files in (checked before any job)."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise ConfigError(f"out_dir={str(out_dir)!r} is not writable ({err.strerror}); allowed: a "
                          f"directory this user can write") from None


def _preflight_resume(argv, args, user, resume) -> List[str]:
    if args.multirun or resume.is_sweep_override():
        raise ConfigError("resume= takes one run directory and no --multirun; to continue a sweep, "
                          "re-run the sweep command with the same name=")
    run_dir = Path(str(resume.value()))
    cfg = resume_config(run_dir, _resume_changes(user))
    done = finished_epochs(read_json(run_dir / SUMMARY), cfg.epochs)
    if done is not None:
        raise ConfigError(f"resume={run_dir} is invalid: that run already finished ({done} epochs); "
                          f"allowed: an unfinished run, or a larger epochs= to train it further")
    resolve_device(cfg.device)
    # Hydra logs into the resumed directory and leaves its .hydra/ (the original config) alone.
    return list(argv) + [f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


# --- the Hydra task -------------------------------------------------------------------------------

def _resume_changes(parsed) -> Dict[str, object]:
    """The keys a resume command changes (everything but resume= and Hydra's own)."""
    return {o.key_or_group: o.value() for o in parsed
            if not o.key_or_group.startswith("hydra") and o.key_or_group != "resume"}


def _job_config(cfg: DictConfig, overrides: Sequence[str]) -> Config:
    if cfg.get("resume"):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return resume_config(Path(cfg.resume), _resume_changes(parsed))
    return validate(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> Optional[Dict]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    try:
        config = _job_config(cfg, overrides)
        if multirun:
            config = _pin_gpu(config, hc.job.num)
        return train(config, config.resume or run_dir, overrides)
    except AlreadyFinished as err:
        if multirun:
            log.info("skipping %s: already finished", run_dir)
            return None
        _exit(f"{err}; choose another name= or delete it", EXIT_USAGE)
    except StopRequested as err:
        log.warning("%s", err)
        _pass_on(err.signum)
        raise SystemExit(EXIT_STOPPED) from None
    except USER_ERRORS as err:
        code = EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED
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


def _pin_gpu(config: Config, job_num: int) -> Config:
    """In a local parallel sweep on a multi-GPU machine, job k trains on GPU k mod #GPUs."""
    import torch

    count = torch.cuda.device_count()
    if config.device in ("auto", "cuda") and count > 1:
        return dataclasses.replace(config, device=f"cuda:{job_num % count}")
    return config


def _pass_on(signum: Optional[int]) -> None:
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
    os.environ["SBRUN_RUN_ID"] = agree_on(_run_id())
    if int(os.environ.get("RANK", "0")) > 0:
        argv = argv + ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                       "hydra/hydra_logging=disabled"]
    return argv


def main(argv: Optional[Sequence[str]] = None) -> None:
    from .distributed import launched_by_torchrun
    from . import sweep

    argv = list(sys.argv[1:] if argv is None else argv)
    sweep.last_report = None
    try:
        argv = preflight(argv)
        if launched_by_torchrun():
            argv = _torchrun_argv(argv)
    except ConfigError as err:
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

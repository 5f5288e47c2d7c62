"""`sbrun`: the Hydra command line.

Before Hydra runs anything, `preflight` parses the overrides, composes every job of the command
(each combination of a sweep) and validates it, so a typo or an out-of-range value stops the
command with one line naming the key and what is allowed, before any data or model is touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import re
import signal
import sys
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from .checkpoint import CheckpointError
from .config import (
    OPERATIONAL,
    UNKNOWN_KEY_HINT,
    Config,
    ConfigError,
    check_compatible,
    config_diffs,
    get_dotted,
    key_kind,
    keys_of_kind,
    register_schema,
    to_dict,
    type_error_message,
    validate,
)
from .data import DataError
from .messages import one_line
from .records import SUMMARY, OutputError, read_json

log = logging.getLogger("sbrun")

GROUPS = ("dataset", "model", "sampler", "optim", "schedule", "recipe", "experiment", "debug", "logger",
          "callbacks")
MAX_PREFLIGHT_JOBS = 512
# Exit codes: 0 done, 1 a run failed, 2 bad input, 3 stopped by a signal (resumable).
EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 1, 2, 3


# --- Hydra resolvers used by conf/config.yaml ----------------------------------------------------

def _run_id(name: Optional[str] = None) -> str:
    """The run/sweep directory name: `name=` if given, else a sub-second timestamp (under torchrun,
    rank 0's, shared through SBRUN_RUN_ID)."""
    if name:
        return str(name)
    return os.environ.get("SBRUN_RUN_ID") or datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def job_dir(overrides=()) -> str:
    """A sweep job's directory: its overrides, sorted, without operational keys (KEY_KINDS), made
    safe as one name. Keyed by what the job computes, not by its position in the sweep, so
    re-running a named sweep with more or reordered values only runs what is new."""
    kept = sorted(str(o) for o in overrides or () if key_kind(str(o).split("=", 1)[0]) != OPERATIONAL)
    slug = re.sub(r"[^A-Za-z0-9=,._+-]", "_", ",".join(kept))
    if len(slug) > 200:      # file names stop at 255 bytes; the hash keeps long ones distinct
        slug = f"{slug[:190]}~{hashlib.sha256(slug.encode()).hexdigest()[:8]}"
    return slug or "defaults"


def _parallel_jobs() -> int:
    """Default job count of the local_parallel launcher: one per GPU, else 2."""
    import torch

    return torch.cuda.device_count() or 2


def register_resolvers() -> None:
    resolvers = {"sbrun_id": (_run_id, True), "sbrun_job": (job_dir, False),
                 "sbrun_parallel_jobs": (_parallel_jobs, False),
                 "sbrun_operational_keys": (lambda: keys_of_kind(OPERATIONAL), False)}
    for name, (fn, cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


register_resolvers()
register_schema()


# --- preflight -----------------------------------------------------------------------------------

def config_dir() -> Path:
    return Path(str(resources.files("sbrun") / "conf"))


def group_options(group: str, extra_dir: Optional[str] = None) -> List[str]:
    dirs = [config_dir()] + ([Path(extra_dir)] if extra_dir else [])
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def compose_error(err: BaseException, overrides: Sequence[str] = ()) -> ConfigError:
    """One line for a Hydra composition error: unknown keys name what is allowed at that level."""
    from omegaconf.errors import OmegaConfBaseException

    cause = err.__cause__ or err
    text = f"{err}\n{cause}"
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text) \
        or re.search(r"Could not append to config. An item is already at '([^']+)'", text)
    if m and "could not be converted" not in text and "is not a subclass" not in text:
        return ConfigError(f"{m.group(1)} is not a config key; {UNKNOWN_KEY_HINT}")
    if isinstance(cause, OmegaConfBaseException):
        return ConfigError(type_error_message(cause))
    return ConfigError(one_line(err, lines=2))


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


def _check_groups(parsed, extra_dir: Optional[str]) -> None:
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        allowed = group_options(group, extra_dir)
        for v in values:
            for item in (v if isinstance(v, list) else [v]):
                if item is not None and str(item) not in allowed:
                    raise ConfigError(f"{group}={item} is not a known {group}; allowed: {', '.join(allowed)}")


LAUNCHER_PLUGINS = {"slurm": "hydra_plugins.hydra_submitit_launcher",
                    "slurm_ddp": "hydra_plugins.hydra_submitit_launcher",
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


@contextmanager
def composer(extra_dir: Optional[str] = None, config_name: str = "config"):
    """A Hydra compose function over sbrun's configs (plus --config-dir's, as Hydra adds it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # Inside the Hydra app (a resumed run's task) Hydra is already initialised: compose beside it.
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="sbrun"):
            search = [f"hydra.searchpath=[file://{Path(extra_dir).absolute()}]"] if extra_dir else []

            def _compose(overrides: Sequence[str], hydra_node: bool = False) -> DictConfig:
                try:
                    return compose(config_name, overrides=search + list(overrides), return_hydra_config=hydra_node)
                except Exception as err:
                    raise unknown_component_key(err, overrides, _compose) or compose_error(err, overrides) from None
            yield _compose
    finally:
        GlobalHydra.instance().hydra = running


def unknown_component_key(err: BaseException, overrides: Sequence[str], compose) -> Optional[ConfigError]:
    """For a key the chosen model/dataset/sampler/logger does not have, the line names the
    choice and its keys (e.g. `sampler.keep` with sampler=sb)."""
    m = re.search(r"Could not override '((model|dataset|sampler|logger)\.[^']+)'", f"{err}\n{err.__cause__}")
    if not m:
        return None
    key, group = m.group(1), m.group(2)
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        node = compose(rest)[group]
    except Exception:
        return None
    how = "" if group != "model" else "; for your own model's arguments use +model.KEY=VALUE"
    if group == "logger":       # logger.<tracker>.<key>: the node of each chosen tracker
        chosen = sorted(node.keys())
        tracker = key.split(".")[1]
        if tracker not in chosen:
            return ConfigError(f"logger.{tracker} has no effect with logger={','.join(chosen)}; allowed: choose it "
                               f"with logger={tracker} or logger=[{','.join(chosen + [tracker])}]")
        name, node = tracker, node[tracker]
        return ConfigError(f"{key} is not a setting of logger={name}; allowed: "
                           f"{', '.join(sorted(k for k in node.keys() if k != '_target_')) or '(none)'}")
    name = node.get("name", group) if hasattr(node, "get") else group
    keys = sorted(k for k in node.keys() if k not in ("_target_", "name"))
    return ConfigError(f"{key} has no effect with {group}={name}; allowed: {', '.join(keys) or '(none)'}{how}")


def preflight(argv: Sequence[str]) -> List[str]:
    """Validate every job the command would run; return the argv to hand to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = get_args_parser().parse_args(list(argv))
    if args.help:
        print(help_text(args.config_dir))
        raise SystemExit(0)
    if args.hydra_help or args.cfg or args.info or args.shell_completion \
            or args.config_path or args.experimental_rerun:
        return list(argv)
    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        raise ConfigError(f"--config-dir={args.config_dir} is not a directory; allowed: a folder of extra config "
                          f"groups (e.g. DIR/sampler/mine.yaml)")
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as err:
        raise ConfigError(f"cannot parse the overrides: {one_line(err, lines=2)}") from None
    _check_groups(parsed, args.config_dir)
    user = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    resume = next((o for o in user if o.key_or_group == "resume"), None)
    if resume is not None and resume.value() not in (None, "null"):
        return _preflight_resume(argv, args, user, resume)
    from .build import resolve_device

    local = _local_launcher(parsed)
    out_dirs = set()
    with composer(args.config_dir, args.config_name or "config") as compose:
        for job in _job_overrides(user):
            composed = compose(job, hydra_node=True)
            run_dir = pop_run_dir(composed, args.multirun)
            cfg = validate(composed)
            if local:
                resolve_device(cfg.device)
            out_dirs.add(cfg.out_dir)
            check_trackers(cfg)
            check_existing(run_dir, cfg, verify=not args.multirun)
            for note in ineffective(cfg, job):
                log_note(note)
    for out in sorted(out_dirs):
        _check_writable(Path(out))
    return list(argv)


def pop_run_dir(composed: DictConfig, multirun: bool) -> Path:
    """The directory Hydra will give this job (a sweep job's or a single run's), taken out of a
    config composed with its `hydra` node, which is removed."""
    from omegaconf import open_dict

    hc = composed.hydra
    where = Path(hc.sweep.dir) / str(hc.sweep.subdir) if multirun else Path(hc.run.dir)
    with open_dict(composed):
        del composed["hydra"]
    return where


def check_existing(run_dir: Path, cfg: Config, verify: bool) -> None:
    """Before Hydra writes into an existing run directory: the same experiment only (one identity
    check for fresh, skip, extend and resume), and, with `verify`, a latest checkpoint that loads
    if the run will continue. A refusal leaves the directory as it was."""
    from .checkpoint import latest
    from .runner import check_run_dir, is_finished, load_checkpoint

    summary = check_run_dir(run_dir, to_dict(cfg))
    if verify and not is_finished(summary, to_dict(cfg)) and (path := latest(run_dir)) is not None:
        load_checkpoint(path)


def help_text(extra_dir: Optional[str] = None) -> str:
    """`sbrun --help`: usage, each config group's options, and every run-level key with its
    default and its one-line description (from the schema's field docs, sbrun/config.py)."""
    from .config import key_docs

    lines = ["sbrun: Selective-Backprop experiments (Jiang et al. 2019), one run or a --multirun sweep.",
             "", "usage: sbrun [KEY=VALUE ...]              e.g. sbrun dataset=mnist sampler=sb beta=2",
             "       sbrun -m KEY=A,B ...                  a sweep over every combination",
             "       sbrun resume=RUN_DIR                  continue a stopped run",
             "       sbrun GROUP=OPTION --cfg job          the full composed config, a component's keys too",
             "", "companion commands (each has --help):",
             "  sbrun-compare NAME --methods ... --budgets ... --lrs ...   the equal-compute protocol: lr tuned per",
             "                method on a validation split, paired verdict against Traditional",
             "  sbrun-plot DIR   every paper figure and table from runs;  sbrun-bench   costs and speed",
             "", "config groups (GROUP=OPTION):"]
    lines += [f"  {g:<12} {', '.join(group_options(g, extra_dir))}" for g in GROUPS]
    lines += ["", "keys (KEY=VALUE; default in brackets):"]
    for key, default, text in key_docs():
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  {key:<24} {text} [{shown}]")
    lines += ["", "Exit codes: 0 done, 1 a run failed, 2 bad input, 3 stopped by a signal (resumable).",
              "Hydra's own options: sbrun --hydra-help."]
    return "\n".join(lines)


def check_trackers(cfg: Config) -> None:
    """Build the selected trackers (constructors only check their settings), starting none."""
    from .trackers import build

    build(cfg.logger)


def ineffective(cfg: Config, job: Sequence[str]) -> List[str]:
    """Settings on the command line that this job does not use (said once, never silently)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in job}
    notes = []
    if "beta" in keys and cfg.beta is None:
        notes.append(f"beta has no effect with sampler={cfg.sampler.name} (it has its own selectivity "
                     f"{cfg.sampler.describe()['selectivity']:.3g}); it is not recorded")
    scoring = sorted(k for k in keys if k == "selection_forward" or k.startswith("scoring."))
    if scoring and not cfg.sampler.scores:
        notes.append(f"{', '.join(scoring)} has no effect with sampler={cfg.sampler.name} (it runs no scoring "
                     f"forwards); it is not recorded in params")
    if "epochs" in keys and cfg.budget.amount is not None:
        notes.append(f"epochs has no effect: budget.amount={cfg.budget.amount:g} {cfg.budget.unit} "
                     f"sets the run's length")
    if "channels_last" in keys and cfg.channels_last and cfg.model.name in ("mlp", "linear"):
        notes.append(f"channels_last has no effect on model={cfg.model.name} (no convolutions)")
    return notes


_said = set()


def log_note(note: str) -> None:
    if note not in _said:
        _said.add(note)
        print(f"sbrun: note: {note}", file=sys.stderr)


def _check_writable(out_dir: Path) -> None:
    """out_dir must be a directory this process can create files in (checked before any job). A
    folder created only for this check is removed again, so bad input leaves nothing behind."""
    import tempfile

    from .data.builtin import first_missing

    created = first_missing(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise ConfigError(f"out_dir={str(out_dir)!r} is not writable ({err.strerror}); allowed: a "
                          f"directory this user can write") from None
    finally:
        if created is not None and created.is_dir():
            import shutil
            shutil.rmtree(created, ignore_errors=True)


# --- resume ---------------------------------------------------------------------------------------

def saved_summary(run_dir: Path) -> Dict:
    summary = read_json(Path(run_dir) / SUMMARY)
    if not summary or "config" not in summary:
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: no sbrun run there (summary.json is missing or "
                          f"unreadable); allowed: a run directory sbrun wrote")
    return summary


def resume_config(run_dir: Path, new_overrides: Sequence[str], extra_dir: Optional[str] = None) -> Config:
    """The saved config of `run_dir`, with what this command changes applied.

    The command's overrides are composed on top of the run's own command line and compared with
    the run's composition, so restating a key with its saved value (the shell history plus
    `resume=...`) is no change, and a real change is refused naming the key and both values,
    unless it is a setting (a longer run) or an operational key (where it runs).
    """
    summary = saved_summary(run_dir)
    saved = summary["config"]
    original = [o for o in summary.get("overrides") or [] if not o.split("=", 1)[0].lstrip("+~").startswith("resume")]
    with composer(extra_dir) as compose:
        before = to_dict(validate(compose(original)))
        command = validate(compose(original + list(new_overrides)))
        after = to_dict(command)
    check_compatible(before, after, "run directory")
    changed = config_diffs(before, after)
    merged = OmegaConf.create(saved)
    for key in changed:
        OmegaConf.update(merged, key, get_dotted(after, key), force_add=True)
    merged.resume = str(run_dir)
    merged.callbacks = command.callbacks     # this command's (never recorded)
    return validate(merged)


def _preflight_resume(argv, args, user, resume) -> List[str]:
    from .build import resolve_device
    from .runner import is_finished

    if args.multirun or resume.is_sweep_override():
        raise ConfigError("resume= takes one run directory and no --multirun; to continue a sweep, "
                          "re-run the sweep command with the same name=")
    run_dir = Path(str(resume.value()))
    cfg = resume_config(run_dir, _resume_overrides(user), args.config_dir)
    summary = read_json(run_dir / SUMMARY)
    if is_finished(summary, to_dict(cfg)):
        raise ConfigError(f"resume={run_dir} is invalid: that run already finished ({summary.get('epochs_completed')} "
                          f"epochs, stopped on {summary.get('stop_reason') or 'epochs'}); "
                          f"allowed: an unfinished run, or "
                          f"a larger epochs=, hours= or budget.amount= to train it further")
    resolve_device(cfg.device)
    check_trackers(cfg)
    check_existing(run_dir, cfg, verify=True)
    # Hydra logs into the resumed directory and leaves its .hydra/ (the original config) alone.
    return list(argv) + [f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def _resume_overrides(parsed) -> List[str]:
    """The command's own overrides, as written (everything but resume= and Hydra's)."""
    return [o.input_line for o in parsed if not o.key_or_group.startswith("hydra") and o.key_or_group != "resume"]


# --- the Hydra task -------------------------------------------------------------------------------

def _job_config(cfg: DictConfig, overrides: Sequence[str]) -> Config:
    if cfg.get("resume"):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return resume_config(Path(cfg.resume), _resume_overrides(parsed))
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
    os.environ["SBRUN_RUN_ID"] = agree_on(_run_id())
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

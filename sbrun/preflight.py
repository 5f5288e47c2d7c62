"""Every check of an `sbrun` command before Hydra runs anything.

`preflight` parses the overrides, composes every job of the command (each combination of a
sweep) and validates it, so a typo or an out-of-range value stops the command with one line
naming the key and what is allowed, before any data or model is touched. What only Hydra knows
(its own flags, its launchers' settings) it leaves to Hydra, which reports its own errors.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from omegaconf import DictConfig

from .compose import GROUPS, composer, group_options, validate
from .config import Config, ConfigError, key_docs
from .identity import to_dict
from .messages import one_line
from .records import SUMMARY, read_json
from .resume import resume_config, resume_overrides

MAX_PREFLIGHT_JOBS = 512


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """The command line as Hydra's flags read it, and what they do not cover (Hydra judges that)."""
    return arg_parser().parse_known_args(list(argv))


def arg_parser() -> argparse.ArgumentParser:
    """Hydra's command-line flags (`sbrun --hydra-help`), read here without Hydra's internals."""
    p = argparse.ArgumentParser(add_help=False)
    for flag, short in (("--help", "-h"), ("--hydra-help", None), ("--version", None), ("--resolve", None),
                        ("--run", "-r"), ("--multirun", "-m"), ("--shell-completion", "-sc")):
        p.add_argument(flag, *([short] if short else []), action="store_true")
    for flag, short in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"),
                        ("--config-dir", "-cd"), ("--experimental-rerun", None)):
        p.add_argument(flag, *([short] if short else []))
    p.add_argument("--info", "-i", nargs="?", const="all")
    p.add_argument("overrides", nargs="*")
    return p


def preflight(argv: Sequence[str]) -> List[str]:
    """Validate every job the command would run; return the argv to hand to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, unknown = parse_args(argv)
    if args.help:
        print(help_text(args.config_dir))
        raise SystemExit(0)
    if unknown or args.hydra_help or args.version or args.cfg or args.info or args.shell_completion \
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


def _preflight_resume(argv, args, user, resume) -> List[str]:
    from .build import resolve_device
    from .runner import is_finished

    if args.multirun or resume.is_sweep_override():
        raise ConfigError("resume= takes one run directory and no --multirun; to continue a sweep, "
                          "re-run the sweep command with the same name=")
    run_dir = Path(str(resume.value()))
    cfg = resume_config(run_dir, resume_overrides(user), args.config_dir)
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

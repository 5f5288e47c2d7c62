"""`resume=RUN_DIR`: the saved config of a run, with what a new command may change applied."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from .compose import composer, validate
from .config import Config, ConfigError
from .identity import check_compatible, config_diffs, get_dotted, to_dict
from .records import SUMMARY, read_json


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


def resume_overrides(parsed) -> List[str]:
    """A command's own overrides (Hydra-parsed), as written: everything but resume= and Hydra's."""
    return [o.input_line for o in parsed if not o.key_or_group.startswith("hydra") and o.key_or_group != "resume"]

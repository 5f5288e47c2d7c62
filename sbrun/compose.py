"""sbrun's configs composed through Hydra's public compose API, and validated into a Config.

Importing this module registers what conf/ needs before Hydra composes anything: the OmegaConf
resolvers conf/config.yaml calls (run and sweep directory names, the operational keys) and the
schema dataclasses in Hydra's ConfigStore (`sbrun_schema`, `schema/dataset`,
`schema/sampler/<name>`). The command line, the tests, sbrun-bench and library users import it
alike; `validate()` is the one place that turns a composed config into the typed Config.
"""
from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .coerce import UNKNOWN_KEY_HINT, merge_into, type_error_message
from .components import (
    callbacks_config,
    dataset_config,
    logger_config,
    model_config,
    sampler_config,
    sampler_reads_beta,
    schema_nodes,
)
from .config import OPERATIONAL, Config, ConfigError, key_kind, keys_of_kind
from .messages import one_line

GROUPS = ("dataset", "model", "sampler", "optim", "schedule", "recipe", "experiment", "debug", "logger",
          "callbacks")

# --- the resolvers conf/config.yaml calls ---------------------------------------------------------

def run_id(name: Optional[str] = None) -> str:
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
    resolvers = {"sbrun_id": (run_id, True), "sbrun_job": (job_dir, False),
                 "sbrun_parallel_jobs": (_parallel_jobs, False),
                 "sbrun_operational_keys": (lambda: keys_of_kind(OPERATIONAL), False)}
    for name, (fn, cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


SCHEMA_NAME = "sbrun_schema"


def register_schema() -> None:
    """Make the dataclasses the base of conf/: every run-level key exists with one typed default
    (the base of conf/config.yaml, so Hydra rejects unknown keys at compose time), and the
    dataset's generic keys and each built-in sampler's keys come from their dataclasses as the
    nodes `schema/dataset` and `schema/sampler/<name>`, which conf/ extends with what differs."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=Config)
    for path, node in schema_nodes().items():
        group, name = path.rsplit("/", 1)
        store.store(group=group, name=name, node=node)


register_resolvers()
register_schema()


# --- composing -------------------------------------------------------------------------------------

def config_dir() -> Path:
    return Path(str(resources.files("sbrun") / "conf"))


def group_options(group: str, extra_dir: Optional[str] = None) -> List[str]:
    dirs = [config_dir()] + ([Path(extra_dir)] if extra_dir else [])
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


@contextmanager
def composer(extra_dir: Optional[str] = None, config_name: str = "config"):
    """A compose function over sbrun's configs (plus --config-dir's, as Hydra adds it). A config
    Hydra refuses is one ConfigError line (`compose_error`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # Inside the Hydra app (a resumed run's task composes its saved command), compose there, on
    # the app's own search path, which already holds any --config-dir.
    inside = GlobalHydra.instance().is_initialized()
    search = [f"hydra.searchpath=[file://{Path(extra_dir).absolute()}]"] if extra_dir and not inside else []

    def _compose(overrides: Sequence[str], hydra_node: bool = False) -> DictConfig:
        try:
            return compose(config_name, overrides=search + list(overrides), return_hydra_config=hydra_node)
        except Exception as err:
            def groups_only(chosen: List[str]) -> DictConfig:
                return compose(config_name, overrides=search + chosen)
            raise compose_error(err, overrides, groups_only, extra_dir) from None

    if inside:
        yield _compose
        return
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="sbrun"):
        yield _compose


def compose_error(err: BaseException, overrides: Sequence[str], groups_only: Callable[[List[str]], DictConfig],
                  extra_dir: Optional[str] = None) -> ConfigError:
    """One line for a composition Hydra refused: the key override at fault, found by sbrun itself
    (`override_error`); else the OmegaConf error behind Hydra's (a bad value in a group file),
    naming its key; else Hydra's own message, on one line."""
    found = override_error(overrides, groups_only, extra_dir)
    if found is not None:
        return found
    cause = err.__cause__ or err
    if isinstance(cause, OmegaConfBaseException):
        return ConfigError(type_error_message(cause))
    return ConfigError(one_line(err, lines=2))


def is_group(key: str, extra_dir: Optional[str] = None) -> bool:
    """Whether an override chooses a config group's option (`sampler=sb`) rather than sets a key."""
    dirs = [config_dir()] + ([Path(extra_dir)] if extra_dir else [])
    return "/" in key or ("." not in key and any((d / key).is_dir() for d in dirs))


def override_error(overrides: Sequence[str], groups_only: Callable[[List[str]], DictConfig],
                   extra_dir: Optional[str] = None) -> Optional[ConfigError]:
    """The first key override Hydra cannot apply, named in sbrun's words: the group choices alone
    compose, then each key override is applied to that config in order, as Hydra applies them, so
    the failing one and its kind (an unknown key, a value of the wrong type) come from the config
    and the exception's type, not from Hydra's message. None when no key override is at fault."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        cfg = groups_only([o.input_line for o in parsed if is_group(o.key_or_group, extra_dir)])
    except Exception:
        return None
    for o in parsed:
        key = o.key_or_group
        if is_group(key, extra_dir) or key.startswith("hydra"):
            continue
        try:
            if not apply_override(cfg, o):
                return None
        except KeyTaken:        # what sbrun has always said here (Hydra: "an item is already at")
            return ConfigError(f"{key} is not a config key; {UNKNOWN_KEY_HINT}")
        except (ConfigAttributeError, ConfigKeyError):
            if o.is_add() or o.is_force_add():
                return ConfigError(f"{key} is not a config key; {UNKNOWN_KEY_HINT}")
            return unknown_key(key, cfg)
        except OmegaConfBaseException as err:
            return ConfigError(type_error_message(err))
    return None


class KeyTaken(Exception):
    """`+key=VALUE` where the config already has `key`."""


def apply_override(cfg: DictConfig, o) -> bool:
    """Apply one parsed key override to `cfg` with Hydra's rules for `key=`, `+key=`, `++key=` and
    `~key` (OmegaConf raises for an unknown key or a wrong type). False where Hydra refuses it for
    a reason of its own, which its message says."""
    key, value = o.key_or_group, o.value()
    if o.package is not None:
        return False
    if o.is_delete():
        current = OmegaConf.select(cfg, key, throw_on_missing=False)
        if current is None or (value is not None and value != current):
            return False
        parent, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
        return True
    if o.is_add() and OmegaConf.select(cfg, key, throw_on_missing=False) is not None \
            and not isinstance(value, (dict, list)):
        raise KeyTaken(key)
    OmegaConf.update(cfg, key, value, merge=True, force_add=o.is_add() or o.is_force_add())
    return True


COMPONENT_GROUPS = ("model", "dataset", "sampler", "logger")


def unknown_key(key: str, cfg: DictConfig) -> ConfigError:
    """An unknown key; for one the chosen model/dataset/sampler/logger does not have, the line
    names the choice and its keys (e.g. `sampler.keep` with sampler=sb)."""
    group = key.split(".", 1)[0]
    node = cfg.get(group) if group in COMPONENT_GROUPS and "." in key else None
    if not isinstance(node, DictConfig):
        return ConfigError(f"{key} is not a config key; {UNKNOWN_KEY_HINT}")
    if group == "logger":       # logger.<tracker>.<key>: the node of each chosen tracker
        chosen = sorted(node.keys())
        tracker = key.split(".")[1]
        if tracker not in chosen:
            return ConfigError(f"logger.{tracker} has no effect with logger={','.join(chosen)}; allowed: choose it "
                               f"with logger={tracker} or logger=[{','.join(chosen + [tracker])}]")
        own = node[tracker]
        keys = sorted(k for k in own.keys() if k != "_target_") if isinstance(own, DictConfig) else []
        return ConfigError(f"{key} is not a setting of logger={tracker}; allowed: {', '.join(keys) or '(none)'}")
    how = "" if group != "model" else "; for your own model's arguments use +model.KEY=VALUE"
    name = node.get("name", group)
    keys = sorted(k for k in node.keys() if k not in ("_target_", "name"))
    return ConfigError(f"{key} has no effect with {group}={name}; allowed: {', '.join(keys) or '(none)'}{how}")


# --- validation ------------------------------------------------------------------------------------

def validate(cfg: DictConfig | dict) -> Config:
    """Merge a composed config onto the schema, check every range and return the typed Config
    with component specs. Hydra's own section (`hydra:`) is ignored. Raises ConfigError."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    try:
        reads_beta = sampler_reads_beta(cfg)
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(type_error_message(err)) from None
    data.pop("hydra", None)
    parts = {k: data.pop(k, None) or {} for k in ("dataset", "model", "sampler", "logger", "callbacks")}
    for group in ("dataset", "model", "sampler"):
        check_required(group, parts[group])
    run = merge_into(Config, data)
    assert isinstance(run, Config)
    if not reads_beta:
        run.beta = None
    run.dataset = dataset_config(parts["dataset"])
    run.model = model_config(parts["model"])
    run.sampler = sampler_config(parts["sampler"])
    run.logger = logger_config(parts["logger"])
    run.callbacks = callbacks_config(parts["callbacks"])
    return run


# What a required (`???`) component key looks like, for the message that asks for it.
REQUIRED_EXAMPLES = {"dataset.path": {"arrays": "FILE.npz (x_train, y_train, x_test, y_test)",
                                      "folder": "DIR (DIR/train/<class>/*, DIR/test/<class>/*)"}}


def check_required(group: str, node: Dict[str, Any]) -> None:
    """A component key its YAML leaves as `???` must be given, by its own name (dataset.path)."""
    for key, value in node.items() if isinstance(node, dict) else ():
        if value == "???":
            name = node.get("name", group)
            example = REQUIRED_EXAMPLES.get(f"{group}.{key}", {}).get(name, "VALUE")
            raise ConfigError(f"{group}.{key} is required with {group}={name}; allowed: {group}.{key}={example}")

"""Component nodes (`model`, `dataset`, `sampler`, `logger`, `callbacks`) to validated specs.

Each node carries a `_target_`. Validation resolves the target (the current directory counts as
importable, as with `python -m`) and checks the node's keys against the target's schema without
building anything: a constructor's or loader's signature, or a sampler's config dataclass. Every
problem is one ConfigError line naming the key. build.py turns the specs into objects.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from .coerce import merge_into
from .config import ConfigError, DatasetConfig, ModelConfig
from .messages import one_line

# Arguments sbrun supplies itself where a target's signature accepts them.
MODEL_INJECTED = ("num_classes", "in_channels", "image_size")
DATASET_INJECTED = ("root", "image_size", "channels", "num_classes", "seed")
_DATASET_GENERIC = {f.name for f in dataclasses.fields(DatasetConfig)} - {"target", "loader"}


def resolve_target(path: Any, key: str) -> Callable:
    """The object a dotted `_target_` names, or one ConfigError line."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{key} is missing; allowed: a dotted path to a class or function, "
                          f"e.g. my_pkg.nets.TinyNet")
    try:
        return locate(path)
    except Exception as first:
        if os.getcwd() not in sys.path:     # the console script's sys.path lacks the current directory
            sys.path.insert(0, os.getcwd())
            try:
                return locate(path)
            except Exception:
                pass
        raise ConfigError(f"{key}={path} cannot be imported ({one_line(first, lines=None, limit=160)}); "
                          f"allowed: a dotted path to a class or function importable from here "
                          f"(the current directory counts)") from None


def locate(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError as err:
            if err.name and not ".".join(parts[:n]).startswith(err.name):
                raise          # the module exists but one of its own imports is missing
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                raise ImportError(f"{'.'.join(parts[:n])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def accepted_args(fn: Callable) -> tuple[set, bool]:
    """(named parameters, whether it takes **kwargs) of a callable or class constructor."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set(), True
    params = sig.parameters.values()
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}, var_kw


def injectable(fn: Callable, offered: Dict[str, Any]) -> Dict[str, Any]:
    """The subset of `offered` arguments that `fn`'s signature names."""
    names, _ = accepted_args(fn)
    return {k: v for k, v in offered.items() if k in names}


_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_kwargs(fn: Callable, kwargs: Dict[str, Any], group: str, target: str, injected: Iterable[str]) -> None:
    """Every key must be a parameter of `fn` (unless it takes **kwargs), of the annotated type."""
    names, var_kw = accepted_args(fn)
    own = sorted(names - set(injected) - {"self"})
    try:
        hints = inspect.get_annotations(fn, eval_str=True) if inspect.isfunction(fn) else \
            inspect.get_annotations(fn.__init__, eval_str=True)
    except Exception:
        hints = {}
    for key, value in kwargs.items():
        if key in injected:
            raise ConfigError(f"{group}.{key} is set by sbrun from the data; allowed: the other keys of "
                              f"{target}: {', '.join(own) or '(none)'}")
        if key not in names and not var_kw:
            raise ConfigError(f"{group}.{key} is not a parameter of {target}; allowed: {', '.join(own) or '(none)'}")
        want = hints.get(key)
        if want in _TYPES and value is not None and not _is_type(value, want):
            raise ConfigError(f"{group}.{key}={value!r} is invalid; allowed: {_TYPES[want]}")


def _is_type(value: Any, want: type) -> bool:
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


def _split_target(node: Any, group: str) -> tuple[str, Dict[str, Any]]:
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{group}._target_ is missing; allowed: a {group} config with a _target_ "
                          f"(choose one with {group}=NAME, or give {group}._target_=my_pkg.module.Name)")
    node = strip_inherited(group, dict(node))
    return node.pop("_target_"), node


def sampler_schema(cls: type) -> Dict[str, Any]:
    """A sampler config dataclass's defaults as a node with its `_target_`. beta is left out:
    a sampler that follows the run's beta says `beta: ${beta}` in its YAML, and one that ignores
    it (a fixed keep) then has no beta in its node, nor in tables and resume checks."""
    node = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **dataclasses.asdict(cls())}
    node.pop("beta", None)
    return node


# The built-in samplers' config dataclasses, named by `_target_` as conf/ names them and resolved
# when their schema nodes are asked for: this module imports no sampler, so a sampler may check a
# nested model node with `model_config` (RHO-LOSS's irreducible-loss model) without an import cycle.
BUILTIN_SAMPLERS = ("sbrun.samplers.base.TraditionalConfig", "sbrun.samplers.sb.SBConfig",
                    "sbrun.samplers.baselines.RandomConfig", "sbrun.samplers.baselines.TopKConfig",
                    "sbrun.samplers.baselines.ComposerConfig", "sbrun.samplers.baselines.Kath18Config",
                    "sbrun.samplers.infobatch.InfoBatchConfig", "sbrun.samplers.kakurenbo.KakurenboConfig",
                    "sbrun.samplers.rho.RhoConfig", "sbrun.samplers.rs2.RS2Config")


def schema_nodes() -> Dict[str, Dict[str, Any]]:
    """The nodes compose.register_schema stores for conf/ to extend, by Hydra path: the generic
    dataset keys (name and loader are each dataset's own) and every built-in sampler by name."""
    dataset = {k: v for k, v in dataclasses.asdict(DatasetConfig()).items() if k not in ("name", "target", "loader")}
    samplers = [getattr(importlib.import_module(module), name)
                for module, _, name in (path.rpartition(".") for path in BUILTIN_SAMPLERS)]
    return {"schema/dataset": dataset, **{f"schema/sampler/{c.name}": sampler_schema(c) for c in samplers}}


def extended(group: str, defaults: Any) -> Dict[str, Any]:
    """The node a group option's defaults list lays under its own keys: the schema nodes and
    the other options of the group it extends (sampler=stale_sb extends sb, which extends
    schema/sampler/sb). Entries for other groups (overrides) add nothing to this group's node."""
    node: Dict[str, Any] = {}
    for entry in defaults or []:
        ref = entry.split("@", 1)[0] if isinstance(entry, str) else ""
        if ref.startswith(f"/schema/{group}"):
            node.update(schema_nodes().get(ref[1:], {}))
        elif ref and ref != "_self_" and "/" not in ref:
            node.update(group_file(group, ref))
    return node


def package_header(text: str) -> Optional[str]:
    """The `# @package X` a Hydra config file declares among its leading comments, or None."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*@package\s+(\S+)", line)
        if m:
            return m.group(1)
    return None


def group_file(group: str, name: Any) -> Dict[str, Any]:
    """The keys conf/<group>/<name>.yaml gives its group's node: what its defaults list extends
    (`extended`), then its own keys, which win (`_self_` counts as last). {} if there is no such file."""
    from importlib import resources

    path = Path(str(resources.files("sbrun") / "conf" / group / f"{name}.yaml"))
    if not isinstance(name, str) or not path.is_file():
        return {}
    text = path.read_text()
    raw = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
    inherited = extended(group, raw.pop("defaults", None))
    own = (raw.get(group) or {}) if package_header(text) == "_global_" else raw
    return {**inherited, **own}


def strip_inherited(group: str, node: Dict[str, Any]) -> Dict[str, Any]:
    """`model._target_=my_pkg.Net` on top of the default `model=cnn` replaces the model: the
    cnn file's own keys (name, width, ...) still at their file values are not the user's and are
    dropped; keys the user set to other values stay (and are checked against the new target)."""
    defaults = group_file(group, node.get("name"))
    if not defaults or defaults.get("_target_") in (None, node.get("_target_")):
        return node
    return {k: v for k, v in node.items() if k == "_target_" or k not in defaults or v != defaults[k]
            or (isinstance(v, str) and "${" in v)}


def model_config(node: Dict[str, Any], group: str = "model") -> ModelConfig:
    """A model node (`group`: where it sits, model or scoring.proxy.model) as a ModelConfig."""
    target, kwargs = _split_target(node, group)
    name = kwargs.pop("name", None) or str(target).rsplit(".", 1)[-1]
    fn = resolve_target(target, f"{group}._target_")
    check_kwargs(fn, kwargs, group, target, MODEL_INJECTED)
    return ModelConfig(name=str(name), target=target, kwargs=kwargs)


def dataset_config(node: Dict[str, Any]) -> DatasetConfig:
    target, rest = _split_target(node, "dataset")
    generic = {k: rest.pop(k) for k in list(rest) if k in _DATASET_GENERIC}
    generic.setdefault("name", str(target).rsplit(".", 1)[-1])
    fn = resolve_target(target, "dataset._target_")
    check_kwargs(fn, rest, "dataset", target, DATASET_INJECTED)
    return merge_into(DatasetConfig, {**generic, "target": target, "loader": rest}, prefix="dataset.")


def sampler_config(node: Dict[str, Any]):
    """A sampler's config dataclass, built from the node (its __post_init__ checks the ranges)."""
    target, fields = _split_target(node, "sampler")
    cls = resolve_target(target, "sampler._target_")
    if not (dataclasses.is_dataclass(cls) and hasattr(cls, "make")):
        raise ConfigError(f"sampler._target_={target} is invalid; allowed: a sampler config dataclass with a "
                          f"make() method (see sbrun/samplers/base.py)")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        name = fields.get("name", target)
        raise ConfigError(f"sampler.{unknown[0]} has no effect with sampler={name}; allowed: "
                          f"{', '.join(sorted(known - {'name'}))}")
    return merge_into(cls, fields, prefix="sampler.")


# What `logger=csv` composed before it became a null option (configs that summary.json files hold).
OLD_CSV_TRACKER = "sbrun.trackers.base.CsvTracker"


def logger_config(node: Dict[str, Any]) -> Dict[str, Any]:
    """The selected trackers ({name: {_target_, settings}}; `csv` is null: every run writes its
    CSVs); built and checked for their packages in preflight (trackers.build)."""
    nodes = named_nodes(node, "logger", "logger=[csv,tensorboard]")
    return {k: None if v is None or v.get("_target_") == OLD_CSV_TRACKER else dict(v) for k, v in nodes.items()}


def callbacks_config(node: Dict[str, Any]) -> Dict[str, Any]:
    """The `callbacks` group ({name: {_target_, arguments}}), each target resolved and its
    arguments checked here; the runner builds them for each run."""
    nodes = named_nodes(node, "callbacks", "+callbacks.NAME._target_=my_pkg.MyCallback")
    targets(nodes, "callbacks")
    return {k: dict(v) for k, v in nodes.items() if v is not None}


def named_nodes(node: Any, group: str, example: str) -> Dict[str, Any]:
    if not isinstance(node, Mapping) or not all(v is None or isinstance(v, Mapping) for v in node.values()):
        raise ConfigError(f"{group} is invalid; allowed: named nodes with a _target_ each, e.g. {example}")
    return dict(node)


def targets(nodes: Optional[Mapping], group: str, base: Optional[type] = None) -> Dict[str, Tuple[Callable, Dict]]:
    """{name: (target, keyword arguments)} of a group of named `_target_` nodes (a null node is
    left out), each target resolved (a subclass of `base` if given) and its arguments checked."""
    out = {}
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        key = f"{group}.{name}"
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"{key} is invalid; allowed: a mapping with a _target_ and its arguments")
        path, kwargs = node["_target_"], {k: v for k, v in node.items() if k != "_target_"}
        target = resolve_target(path, f"{key}._target_")
        if base is not None and not (isinstance(target, type) and issubclass(target, base)):
            raise ConfigError(f"{key}._target_={path} is invalid; allowed: a subclass of "
                              f"{base.__module__}.{base.__qualname__}")
        check_kwargs(target, kwargs, key, path, ())
        out[str(name)] = (target, kwargs)
    return out


def instantiate(nodes: Optional[Mapping], group: str, base: Optional[type] = None) -> Dict[str, Any]:
    """The objects of `targets`, built; a constructor's ValueError is one line naming the key."""
    out = {}
    for name, (target, kwargs) in targets(nodes, group, base).items():
        try:
            out[name] = target(**kwargs)
        except ValueError as bad:       # constructors name the setting: "mode='x' is invalid; ..."
            raise ConfigError(f"{group}.{name}.{one_line(bad)}") from None
    return out


def sampler_reads_beta(cfg: DictConfig) -> bool:
    """Whether the sampler node takes its beta from the top-level `beta` key: by interpolation
    in a composed config, or (a config saved resolved, from summary.json) by an equal value."""
    node = cfg.get("sampler") if isinstance(cfg, DictConfig) else None
    if node is None:
        return False
    raw = OmegaConf.to_container(node, resolve=False)
    if any(isinstance(v, str) and "${beta}" in v.replace(" ", "") for v in _leaves(raw)):
        return True
    top = cfg.get("beta")
    return top is not None and isinstance(raw, dict) and raw.get("beta") == top


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj

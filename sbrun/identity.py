"""What identifies a run: its config as plain data (what summary.json and checkpoints record),
and the one check that an existing run is the same experiment (KEY_KINDS decides per key)."""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from .config import IDENTITY, SETTING, Config, ConfigError, key_kind, keys_of_kind

# Keys added after runs had been recorded without them, with the default that reproduces what
# those runs did: at that default a key is left out of the record, so a run made before it existed
# can still be resumed, extended or skipped (a run without a proxy does the same for scoring.proxy).
ADDED_LATER = {("dataset", "storage"): "auto", ("schedule", "warmup"): 0.0, ("optim", "batch_ref"): None,
               ("budget", "cost_data"): None, ("budget", "charge_data"): False}


def to_dict(cfg: Config) -> dict:
    """The config as plain data, in the composed layout (components with their `_target_`)."""
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    for key in ("optim", "schedule", "budget", "scoring", "eval", "checkpoint"):
        out[key] = dataclasses.asdict(out[key])
    if not cfg.scoring.proxy.enabled:      # a run without a proxy records what it recorded before there was one
        del out["scoring"]["proxy"]
    out["dataset"] = cfg.dataset.node()
    out["model"] = cfg.model.node()
    out["sampler"] = cfg.sampler.node()
    out["logger"] = dict(cfg.logger or {})
    # Callbacks attach to a command (a test's spy, a harness), not to the run: a resume or a
    # re-run does not bring them back.
    del out["callbacks"]
    for (group, key), default in ADDED_LATER.items():
        if out[group].get(key, default) == default:
            out[group].pop(key, None)
    return out


def config_diffs(saved: Dict, current: Dict) -> List[str]:
    """Dotted keys where two config dicts differ."""
    return _diff(saved, current)


def check_compatible(saved: Dict, current: Dict, what: str) -> None:
    """The one identity check, for every way into an existing run: a new command under a taken
    name=, a re-run that skips or extends a finished run, resume=, a sweep job, a checkpoint being
    restored. Raise ConfigError naming the first identity key where `current` differs from
    `saved`, with both values; settings (a longer run) and operational keys may differ."""
    bad = [k for k in config_diffs(saved, current) if key_kind(k) == IDENTITY]
    # a different dataset, model or sampler is named first: their own keys and beta follow from it
    bad.sort(key=lambda k: k not in ("dataset.name", "model.name", "sampler.name"))
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(bad[1:4])})" if len(bad) > 1 else ""
        raise ConfigError(f"{k} cannot change for this run: the {what} has {k}={get_dotted(saved, k)!r}, "
                          f"this command {k}={get_dotted(current, k)!r}{more}; allowed: the run's own value, "
                          f"or changes to settings ({', '.join(keys_of_kind(SETTING))}) and operational keys; "
                          f"for a different experiment, another name= or out_dir")


def _diff(a, b, prefix="") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def get_dotted(d: Dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d

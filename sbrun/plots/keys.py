"""Which recorded keys make a configuration, and which of them a configuration is compared within.

A run's `params` (summary.json) name what it computed. Every params key except the seed is part of
its configuration, unless the project's key table (`sbrun.config.key_kind`) calls it operational.
Keys are sorted into three roles:

- experiment: what configurations are compared *within* (dataset, model, batch size, lr, epochs,
  the command-line `setting`, and the budget: keys of kind `setting` or under `budget`); each
  experiment has its own baseline, figure files and table sections;
- group: label_noise, which makes the panels of an experiment;
- knob: what tells configurations apart inside one comparison: the sampler and its knobs, and
  every params key not listed here (a new sampler's knob, selection_forward, bn_recalibrate, ...),
  so a key added to params later is never averaged over as if it were a seed.
"""
from __future__ import annotations

import json
from typing import Iterable, List, Tuple

import pandas as pd

from ..config import KEY_KINDS, OPERATIONAL, SETTING, key_kind

SEED = "seed"
EXPERIMENT_KEYS = ["dataset", "model", "setting", "batch_size", "lr", "epochs"]
GROUP_KEYS = EXPERIMENT_KEYS + ["label_noise"]
SAMPLER_KNOBS = ["sampler", "beta", "staleness", "selectivity", "variant"]
CONFIG_KEYS = GROUP_KEYS + SAMPLER_KNOBS
PARAMS_COLUMN = "params"    # the merged table's JSON copy of each run's params
_BUDGET = "budget"


def kind(param_key: str) -> str:
    """key_kind for a params key; params spell nested config keys with '_' (budget_amount is
    budget.amount), so a key whose first word is a listed key is looked up dotted."""
    if param_key in KEY_KINDS:
        return KEY_KINDS[param_key]
    head, _, rest = param_key.partition("_")
    if rest and head in KEY_KINDS:
        return key_kind(f"{head}.{rest}")
    return key_kind(param_key)


def role(param_key: str) -> str | None:
    """'experiment', 'group' or 'knob' for a params key; None for the seed and operational keys."""
    if param_key == SEED or kind(param_key) == OPERATIONAL:
        return None
    if param_key in EXPERIMENT_KEYS or kind(param_key) == SETTING or param_key.split("_")[0] == _BUDGET:
        return "experiment"
    if param_key in GROUP_KEYS:
        return "group"
    return "knob"


def param_keys(params_json: Iterable[str]) -> List[str]:
    """Every key of the params JSON texts given (sorted, unique)."""
    keys = set()
    for text in set(params_json):
        if isinstance(text, str) and text:
            obj = json.loads(text)
            keys |= set(obj) if isinstance(obj, dict) else set()
    return sorted(keys)


def extras(df: pd.DataFrame) -> Tuple[List[str], List[str]]:
    """(experiment keys, knob keys) beyond the fixed lists above, from the table's params column
    (absent in tables merged before it existed: no extras then)."""
    if PARAMS_COLUMN not in df.columns:
        return [], []
    fixed = set(CONFIG_KEYS)
    found = [k for k in param_keys(df[PARAMS_COLUMN].dropna()) if k not in fixed]
    return [k for k in found if role(k) == "experiment"], [k for k in found if role(k) == "knob"]


def recorded(override_key: str, params: Iterable[str]) -> bool:
    """Whether a command-line override's key is already recorded in params (so it needs no
    `setting`/`variant` entry): the key itself, its '_' spelling (budget.unit -> budget_unit), or
    for optim.*/sampler.* its last part (optim.lr -> lr, sampler.beta -> beta)."""
    params = set(params)
    head, _, last = override_key.rpartition(".")
    if override_key in params or override_key.replace(".", "_") in params:
        return True
    if head in ("optim", "sampler") and last in params:
        return True
    # the sampler's own fraction knobs are recorded as its expected backprop fraction
    return override_key in ("sampler.prob", "sampler.keep") and "selectivity" in params

"""The composed config of every shipped recipe, pinned (issue 21, "One copy of each default").

Each case composes with sbrun's own composer and compares the resolved config with its snapshot
in tests/data/composed/, so a change to the layout of conf/ (what a YAML states, what the schema
holds, which file picks what) cannot change what a command runs without a diff here.
Regenerate after a deliberate change with SBRUN_UPDATE_SNAPSHOTS=1 and review the diff.
The `logger` node is left out: conf/logger/ is owned by the tracker work, not by this layout.

Then: conf/ restates no schema default (a YAML states only what differs from the schema node it
is composed onto), and a sampler chosen by `_target_` sheds every key its option inherited."""
import json
import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sbrun.components import extended, locate, package_header, sampler_schema, schema_nodes
from sbrun.compose import composer, config_dir, validate
from sbrun.config import Config

SNAPSHOTS = Path(__file__).parent / "data" / "composed"
LEFT_OUT = ("hydra", "logger")


def _options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


CASES = ([[]] + [[f"dataset={d}"] for d in _options("dataset")]
         + [[f"sampler={s}"] for s in _options("sampler")]
         + [[f"experiment={e}"] for e in _options("experiment")]
         + [[f"debug={d}"] for d in _options("debug")]
         + [[f"recipe={r}"] for r in _options("recipe")]
         # precedence: the command line over a dataset's recipe, over an experiment's choices
         + [["dataset=mnist", "model=mlp", "schedule=cosine", "optim.lr=0.05", "epochs=7"],
            ["dataset=cifar10", "experiment=mini_mnist"],
            ["experiment=paper_cifar10", "dataset=cifar100"],
            ["dataset=svhn", "debug=fast", "sampler=rho"]])


def _slug(overrides):
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", ",".join(overrides)) or "defaults"


@pytest.fixture(scope="module")
def compose():
    old = os.environ.pop("SBRUN_DATA_DIR", None)     # data_dir interpolates it
    try:
        with composer() as fn:
            yield fn
    finally:
        if old is not None:
            os.environ["SBRUN_DATA_DIR"] = old


@pytest.mark.parametrize("overrides", CASES, ids=_slug)
def test_composed_config_matches_its_snapshot(compose, overrides):
    composed = OmegaConf.to_container(compose(overrides), resolve=True)
    for key in LEFT_OUT:
        composed.pop(key, None)
    text = json.dumps(composed, indent=1, sort_keys=True) + "\n"    # as text: 2 and 2.0 differ
    path = SNAPSHOTS / f"{_slug(overrides)}.json"
    if os.environ.get("SBRUN_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot for {overrides}: run with SBRUN_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text()


def test_every_snapshot_has_a_case():
    """A snapshot left behind by a removed option would pin nothing."""
    assert {p.stem for p in SNAPSHOTS.glob("*.json")} == {_slug(c) for c in CASES}


def test_a_sampler_target_sheds_the_keys_its_option_inherited(compose):
    """sampler._target_ on top of sampler=stale_sb_authors (which extends stale_sb, sb and the
    SBConfig schema node) leaves none of SB's keys for the new target to reject."""
    cfg = validate(compose(["sampler=stale_sb_authors", "sampler._target_=sbrun.samplers.baselines.RandomConfig"]))
    assert type(cfg.sampler).__name__ == "RandomConfig" and cfg.sampler.epoch_end == "carry"


# --- conf/ restates no schema default ----------------------------------------------------------

# Left out: conf/hydra (Hydra's own settings) and conf/logger (tracker settings, whose schema is
# the tracker classes, owned by the tracker work). Not checked: `model.*` and a dataset's loader
# keys (svhn's extra, synthetic's n_train), whose schema is a constructor's or loader's signature:
# those keys are recorded as the YAML gives them (summary.json, checkpoints), so dropping one that
# equals its signature default would change every existing run's recorded identity.
SKIPPED_DIRS = ("hydra", "logger")
# (file, key): why it states the schema default on purpose.
ON_PURPOSE = {
    (f"experiment/{name}.yaml", "batch_size"): "the paper's batch size, also when the experiment "
    "runs on a dataset given on the command line whose recipe sets another (recipe/arrays: 32)"
    for name in ("paper_cifar10", "paper_cifar100", "paper_svhn")}
RUN_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(Config))


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(tree, dotted):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return KeyError
        tree = tree[part]
    return tree


def _same(a, b):
    return isinstance(a, bool) == isinstance(b, bool) and a == b     # false is not 0


def restated(rel: str, text: str):
    """The keys of the YAML file conf/`rel` whose value equals what the schema (or, for a sampler
    variant, the option it extends) already gives there."""
    group = rel.split("/")[0] if "/" in rel else None
    raw = OmegaConf.to_container(OmegaConf.create(text or "{}"), resolve=False) or {}
    defaults = raw.pop("defaults", None)
    raw.pop("hydra", None)
    if group and package_header(text) != "_global_":
        raw = {group: raw}
    sampler_base = {}
    if group == "sampler":
        sampler_base = extended("sampler", defaults)
        own = raw.get("sampler") or {}
        target = own.get("_target_", sampler_base.get("_target_"))
        sampler_base = {**sampler_schema(locate(target)), **sampler_base} if target else sampler_base
    out = []
    for key, value in _leaves(raw):
        top, _, rest = key.partition(".")
        if top in ("model", "logger") or key.endswith("_target_"):
            continue
        base = schema_nodes()["schema/dataset"] if top == "dataset" else sampler_base if top == "sampler" \
            else RUN_DEFAULTS
        default = _lookup(base, rest if top in ("dataset", "sampler") else key)
        if default is not KeyError and _same(value, default) and (rel, key) not in ON_PURPOSE:
            out.append(f"{rel}: {key}: {value!r}")
    return out


def test_the_checker_finds_restated_defaults():
    assert restated("sampler/mine.yaml", "defaults:\n  - sb\nname: mine\nhistory: 1024\n") == \
        ["sampler/mine.yaml: sampler.history: 1024"]
    assert restated("sampler/x.yaml", "_target_: sbrun.samplers.baselines.Kath18Config\npool_factor: 3\n") == \
        ["sampler/x.yaml: sampler.pool_factor: 3"]
    assert restated("sampler/y.yaml", "defaults:\n  - stale_sb_authors\ncadence: sbrun\n") == []  # undoes its base
    assert restated("dataset/d.yaml", "# @package _global_\ndataset:\n  flip: false\n  name: d\n") == \
        ["dataset/d.yaml: dataset.flip: False"]
    assert restated("schedule/s.yaml", "name: multistep\ngamma: 0.2\n") == \
        ["schedule/s.yaml: schedule.name: 'multistep'"]
    assert restated("recipe/r.yaml", "# @package _global_\nepochs: 30\noptim:\n  lr: 0.02\nmodel:\n  width: 32\n") \
        == ["recipe/r.yaml: epochs: 30"]


def test_conf_restates_no_schema_default():
    conf = config_dir()
    files = sorted(p for p in conf.rglob("*.yaml") if p.relative_to(conf).parts[0] not in SKIPPED_DIRS)
    assert len(files) > 40
    found = [line for p in files for line in restated(p.relative_to(conf).as_posix(), p.read_text())]
    assert found == [], "\n".join(found)
    stale = [k for k in ON_PURPOSE if k[1] not in dict(_leaves(OmegaConf.to_container(OmegaConf.load(conf / k[0]))))]
    assert stale == [], f"exceptions no longer needed: {stale}"

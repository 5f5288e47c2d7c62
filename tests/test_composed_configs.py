"""The composed config of every shipped recipe, pinned (issue 21, "One copy of each default").

Each case composes with sbrun's own composer and compares the resolved config with its snapshot
in tests/data/composed/, so a change to the layout of conf/ (what a YAML states, what the schema
holds, which file picks what) cannot change what a command runs without a diff here.
Regenerate after a deliberate change with SBRUN_UPDATE_SNAPSHOTS=1 and review the diff.
The `logger` node is left out: conf/logger/ is owned by the tracker work, not by this layout."""
import json
import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sbrun.cli import composer, config_dir

SNAPSHOTS = Path(__file__).parent / "data" / "composed"
LEFT_OUT = ("hydra", "logger")


def _options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


CASES = ([[]] + [[f"dataset={d}"] for d in _options("dataset")]
         + [[f"sampler={s}"] for s in _options("sampler")]
         + [[f"experiment={e}"] for e in _options("experiment")]
         + [[f"debug={d}"] for d in _options("debug")]
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

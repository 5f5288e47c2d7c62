"""The shipped experiment scripts compose and validate: every sweep they would launch passes
sbrun's preflight (every job of every sweep), so a config change cannot silently rot them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbrun.cli import preflight

REPO = Path(__file__).resolve().parents[1]
# paper/run_all.sh runs every paper script (each figure's and table's sweeps) in turn
SCRIPTS = [REPO / "scripts" / "paper" / "run_all.sh", REPO / "scripts" / "mini" / "run_all.sh",
           *sorted((REPO / "scripts" / "studies").glob("[!c]*.sh"))]      # not common.sh (sourced)


@pytest.fixture(scope="module")
def recorder(tmp_path_factory):
    """A stand-in for `sbrun` that records each command line; the test validates them in-process
    (one interpreter instead of one per sweep)."""
    path = tmp_path_factory.mktemp("bin") / "sbrun-record"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "with open(os.environ['SBRUN_RECORD'], 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    path.chmod(0o755)
    # and for `sbrun-plot`: make the output folder a study script then writes its summary into
    plot = path.with_name("sbrun-plot-stub")
    plot.write_text('#!/usr/bin/env bash\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && mkdir -p "$2"; shift; done\n')
    plot.chmod(0o755)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.stem}")
def test_every_sweep_of_a_script_validates(script, recorder, tmp_path):
    record = tmp_path / "commands.jsonl"
    compare_record = tmp_path / "compare.jsonl"
    env = {**os.environ, "SBRUN": str(recorder), "SBRUN_PLOT": str(recorder.with_name("sbrun-plot-stub")),
           "PYTHON": "true", "SBRUN_RECORD": str(record),
           "SBRUN_COMPARE": f"env SBRUN_RECORD={compare_record} {recorder}",
           "OUT": str(tmp_path / "out"), "DATA_DIR": str(tmp_path / "data"), "MPLBACKEND": "Agg"}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    commands = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    commands += compare_sweeps(compare_record)
    assert commands, "the script launched no sweep"
    for argv in commands:
        try:
            preflight(argv)
        except (Exception, SystemExit) as err:      # bad input: a ConfigError naming the key
            pytest.fail(f"{' '.join(argv)}: {type(err).__name__}: {err}")


def compare_sweeps(record: Path) -> list:
    """The tuning sweep each recorded `sbrun-compare` command would launch first (its argument
    line parsed as sbrun-compare parses it), with the paper's costs standing in for a costs file
    the test machine does not have."""
    from sbrun import compare

    sweeps = []
    for line in record.read_text().splitlines() if record.exists() else []:
        pr = compare.parse(json.loads(line))
        base = compare.common_overrides(pr, ["budget.cost_select=1", "budget.cost_train=3"])
        sweeps += [["--multirun", *base, *job] for job in compare.tuning_jobs(pr)]
    return sweeps

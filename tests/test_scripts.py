"""The shipped experiment scripts compose and validate: every sweep they would launch passes
sbrun's preflight (every job of every sweep), so a config change cannot silently rot them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# paper/run_all.sh runs every paper script (each figure's and table's sweeps) in turn
SCRIPTS = [REPO / "scripts" / "paper" / "run_all.sh", REPO / "scripts" / "mini" / "run_all.sh"]


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    """A stand-in for `sbrun` that only runs the preflight (composes and validates every job)."""
    path = tmp_path_factory.mktemp("bin") / "sbrun-check"
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom sbrun.cli import preflight\npreflight(sys.argv[1:])\n")
    path.chmod(0o755)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.parent.name)
def test_every_sweep_of_a_script_validates(script, checker, tmp_path):
    env = {**os.environ, "SBRUN": str(checker), "SBRUN_PLOT": "true", "OUT": str(tmp_path / "out"),
           "DATA_DIR": str(tmp_path / "data"), "MPLBACKEND": "Agg"}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "error" not in res.stderr.lower(), res.stderr[-2000:]

"""scripts/studies/summarize.py: the studies' tables from a merged runs.csv, as read back from disk."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "studies" / "summarize.py"


def _summarize():
    spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs_csv(path: Path) -> Path:
    """SB over three seeds (one collapses to 90% error at epoch 2), Traditional over two; the
    scoring columns are empty in every row, as in the committed studies (the pandas 3 path)."""
    worst = {0: 0.03, 1: 0.90, 2: 0.05}
    rows = []
    for seed in (0, 1, 2):
        for ep, err in ((1, 0.2), (2, worst[seed]), (3, 0.01 + 0.001 * seed)):
            rows.append({"run": f"sb{seed}", "seed": seed, "sampler": "sb", "beta": 2.0, "epoch": ep, "test_error": err,
                         "selection_forward": "eval", "scoring_precision": None, "scoring_scale": None})
    for seed, final in ((0, 0.004), (1, 0.030)):
        for ep, err in ((1, 0.2), (2, 0.1), (3, final)):
            rows.append({"run": f"t{seed}", "seed": seed, "sampler": "traditional", "beta": None, "epoch": ep,
                         "test_error": err, "selection_forward": "eval", "scoring_precision": None,
                         "scoring_scale": None})
    out = path / "runs.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def test_worst_errors_are_median_and_range_and_final_intervals_stay_in_their_domain(tmp_path, capsys):
    assert _summarize().main([str(_runs_csv(tmp_path)), "--worst-after", "1"]) == 0
    out = capsys.readouterr().out
    sb = next(line for line in out.splitlines() if line.startswith("| SB β=2"))
    # worst after epoch 1 per seed: 3%, 90%, 5% -> median 5, range [3, 90]; a t-interval would give
    # 32.67 ± 108.7, below 0% and above 100%
    assert sb.endswith("| 5.00 [3.00, 90.00] (n=3) |")
    # final errors 1.0/1.1/1.2%: mean 1.10, t-interval 1.10 ± 4.303 * 0.1 / sqrt(3) = ± 0.25
    assert "| 1.10 [0.85, 1.35] (n=3) |" in sb
    # Traditional's 0.4% and 3.0%: 1.70 ± 12.706 * 1.84 / sqrt(2) would reach -14.8%: clipped and marked
    trad = next(line for line in out.splitlines() if line.startswith("| Traditional"))
    assert "| 1.70 [0.00, 18.22]† (n=2) |" in trad
    assert "±" not in out and "no t-interval on a maximum" in out and "†: the interval left [0, 100]%" in out

"""Paired differences of some methods against another one than sbrun-compare's baseline, from a
comparison's finals.csv (the last evaluation of each run at its chosen lr), by seed per budget.

    python scripts/studies/paired_against.py results/studies/compare/verdicts_noise0 --baseline sb \\
        --methods sb_proxy proxy_topk      # writes paired_vs_sb.csv beside finals.csv
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sbrun.plots.stats import detectable_difference, paired_diff  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a sbrun-compare report folder (holds finals.csv)")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--methods", nargs="+", required=True)
    a = ap.parse_args()
    f = pd.read_csv(a.report / "finals.csv")
    rows = []
    for budget, at in f.groupby("budget_amount"):
        base = at[at["sampler"] == a.baseline].set_index("seed")
        for m in a.methods:
            run = at[at["sampler"] == m].set_index("seed")
            seeds = sorted(set(base.index) & set(run.index))
            d = paired_diff(100 * run.loc[seeds, "test_error"].values, 100 * base.loc[seeds, "test_error"].values)
            rows.append({"budget_amount": budget, "sampler": m, "baseline": a.baseline, "n": d.n,
                         "diff_mean": d.mean, "diff_ci_low": d.lo, "diff_ci_high": d.hi,
                         "diff_detectable": detectable_difference(d.sd, d.n),
                         "backprops_ratio": run.loc[seeds, "backprops"].mean() / base.loc[seeds, "backprops"].mean()})
    out = pd.DataFrame(rows)
    path = a.report / f"paired_vs_{a.baseline}.csv"
    out.to_csv(path, index=False)
    print(out.round(3).to_string(index=False))
    print(f"written: {path}")


if __name__ == "__main__":
    main()

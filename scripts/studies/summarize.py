"""The studies' summary tables, from the runs.csv that sbrun-plot merges (figures/<study>/runs.csv).

    python scripts/studies/summarize.py results/studies/figures/spikes/runs.csv --worst-after 1
    python scripts/studies/summarize.py results/studies/figures/equal_compute/runs.csv --columns budget_amount

Per configuration (every params key but the seed, as sbrun-plot groups them), over seeds: the final
test error as mean [95% Student-t confidence interval] clipped to [0, 100]% (marked † where clipped),
and (with --worst-after E) the worst test error after epoch E as median [min, max]: a per-seed
maximum is skewed and bounded, so a t-interval on it would be wrong. n is the number of seeds.
--columns pivots one key into columns (e.g. the budget). Markdown on stdout.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from sbrun.plots import data, report, stats, style

CLIPPED = "†"


def cell(values) -> str:
    """'1.23 [0.98, 1.48] (n=3)' in %: mean and t-interval, clipped to [0, 100]% († where it was)."""
    s = stats.summarize(values)
    if s.n == 0:
        return "–"
    if s.n < 2:
        return f"{100 * s.mean:.2f} (n=1)"
    lo, hi, clipped = stats.clip_interval(s.lo, s.hi)
    return f"{100 * s.mean:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]{CLIPPED if clipped else ''} (n={s.n})"


def worst_cell(values) -> str:
    """'32.49 [1.10, 88.20] (n=3)' in %: median [smallest, largest] of per-seed maxima."""
    m = stats.median_range(values)
    return "–" if m.n == 0 else f"{100 * m.median:.2f} [{100 * m.lo:.2f}, {100 * m.hi:.2f}] (n={m.n})"


def per_run(df: pd.DataFrame, worst_after: float | None) -> pd.DataFrame:
    last = df.sort_values("epoch").groupby("run").last()
    out = pd.DataFrame({"config": last["config"], "final": last["test_error"]})
    if worst_after is not None:
        late = df[df["epoch"] > worst_after]
        out["worst"] = late.groupby("run")["test_error"].max()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs_csv", nargs="+")
    p.add_argument("--worst-after", type=float, default=None,
                   help="also the worst test error after this epoch (median [min, max] over seeds)")
    p.add_argument("--columns", default=None, help="a params key to pivot into columns (e.g. budget_amount)")
    args = p.parse_args(argv)
    df, _ = report.clean(pd.concat([pd.read_csv(f) for f in args.runs_csv], ignore_index=True))
    cfgs = data.configs(df)
    pivot = args.columns
    shown = cfgs.assign(**{pivot: float("nan")}) if pivot else cfgs
    labels = style.config_labels(shown)
    runs = per_run(df, args.worst_after)
    rows = []
    for _, c in cfgs.iterrows():
        part = runs[runs["config"] == c["config"]]
        row = {"configuration": labels[c["config"]], "key": c.get(pivot) if pivot else None,
               "final": cell(part["final"])}
        if args.worst_after is not None:
            row["worst"] = worst_cell(part["worst"])
        rows.append(row)
    table = pd.DataFrame(rows)
    if pivot:
        wide = table.pivot_table(index="configuration", columns="key", values="final", aggfunc="first", sort=False)
        wide = wide[sorted(wide.columns)]      # budgets in increasing order
        print("| configuration | " + " | ".join(f"{pivot}={k:g}" for k in wide.columns) + " |")
        print("|---|" + "---|" * len(wide.columns))
        for name, r in wide.iterrows():
            print(f"| {name} | " + " | ".join(str(v) for v in r.values) + " |")
        print(f"\nCells: final test error (%), mean [95% t-interval] over seeds (n seeds); {CLIPPED}: the "
              "interval left [0, 100]% and is clipped to it.")
        return 0
    head = "| configuration | final error (%) |" + (f" worst error after epoch {args.worst_after:g} (%) |"
                                                     if args.worst_after is not None else "")
    print(head)
    print("|---|---|" + ("---|" if args.worst_after is not None else ""))
    for _, r in table.iterrows():
        print(f"| {r['configuration']} | {r['final']} |" + (f" {r['worst']} |" if args.worst_after is not None else ""))
    print(f"\nFinal error (%): mean [95% t-interval] over seeds (n seeds); {CLIPPED}: the interval left [0, 100]% "
          "and is clipped to it." + (" Worst error (%): median [smallest, largest] over seeds; no t-interval on a "
                                      "maximum." if args.worst_after is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

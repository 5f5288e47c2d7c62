"""sbrun-plot: every paper figure and table from run or multirun directories.

    sbrun-plot PATH [PATH ...] [-o OUTDIR] [--format png,pdf] [--target-k 1.1,1.2,1.4] [--only NAMES]
               [--baseline NAME]

Runs found at or below the PATHs are merged into OUTDIR/runs.csv (one row per run-epoch); then
every figure the runs support is written to OUTDIR (default: PATH/figures for the first PATH),
with speedup.csv/.md (paper Table 1: geometric-mean speedups with 95% intervals on the log-ratios,
paired by seed, and the seeds that never reached each target; also printed) and results.csv/.md
(final errors, and their paired differences from the baseline's with a power line each).
Figures the runs cannot support (no staleness sweep, no label noise, ...) are skipped with a note
on stderr, as are runs whose records are damaged and duplicate runs of one (configuration, seed).
Exit status: 0 done; 1 an output could not be written or a figure failed (the others are still
written); 2 bad arguments, an unknown or ambiguous --baseline, or no usable runs (nothing written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

PROG = "sbrun-plot"
FORMATS = ("png", "pdf", "svg")
TABLES = "tables"   # --only tables: the tables and runs.csv, no figure


class UsageError(ValueError):
    pass


def _floats(text: str) -> List[float]:
    try:
        ks = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--target-k takes comma-separated numbers like 1.1,1.2,1.4, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise UsageError(f"--target-k values must be >= 1 (multiples of the baseline's final error), got {text!r}")
    return sorted(set(ks))


def _formats(text: str) -> List[str]:
    fmts = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if not fmts or bad:
        raise UsageError(f"--format takes a comma-separated subset of {','.join(FORMATS)}, got {text!r}")
    return fmts


def parser() -> argparse.ArgumentParser:
    from .plots.report import FIGURES

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="figures: " + ", ".join(FIGURES))
    p.add_argument("paths", nargs="+", metavar="PATH", help="run or multirun directories written by sbrun")
    p.add_argument("-o", "--out", metavar="OUTDIR", help="output folder (default: FIRST_PATH/figures)")
    p.add_argument("--format", default="png,pdf", help="image formats, comma-separated (default: png,pdf)")
    p.add_argument("--target-k", default="1.1,1.2,1.4",
                   help="speedup-table targets as multiples of the baseline's final error; the middle one "
                        "is also the time-breakdown and selectivity target (default: 1.1,1.2,1.4)")
    p.add_argument("--baseline", metavar="NAME", default=None,
                   help="the reference configuration of every group: a sampler name, (part of) a configuration's "
                        "label, or such parts joined by commas, e.g. 'sb', 'SB β=2', "
                        "'traditional,selection_forward=eval' (default: traditional)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated figure names to draw (default: all); "
                                                   "'tables' alone draws no figure (tables are always written)")
    return p


def fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


def _merge(paths):
    """The merged runs; each run skipped for bad records gets a note line. When nothing usable is
    left, NoRunsError with one line (the lone problem itself, or a count after the notes)."""
    from . import merge

    problems: List[str] = []
    try:
        df = merge.merge_runs(paths, problems)
    except merge.NoRunsError as err:
        if len(problems) == 1:
            raise merge.NoRunsError(f"{problems[0]}; no other run to plot") from None
        for line in problems:
            note(f"{line}; run skipped")
        raise merge.NoRunsError(str(err)) from None
    for line in problems:
        note(f"{line}; run skipped")
    return df


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        ks, formats = _floats(args.target_k), _formats(args.format)
        only = [n.strip() for n in args.only.split(",")] if args.only else None
    except UsageError as err:
        return fail(str(err), 2)

    # Heavy imports after argument checks, so --help and usage errors answer at once.
    from . import merge, records
    from .plots import report, targets

    if only is not None:
        only = [n for n in only if n != TABLES]
        unknown = [n for n in only if n not in report.FIGURES]
        if unknown:
            return fail(f"unknown figure(s) {', '.join(unknown)}; allowed: {', '.join(report.FIGURES)}, {TABLES}", 2)
    try:
        df = _merge(args.paths)
    except merge.NoRunsError as err:
        return fail(str(err), 2)
    out = Path(args.out) if args.out else Path(args.paths[0]) / "figures"

    merged_columns = list(df.columns) + ["setting", "variant"]   # runs.csv: without the derived keys
    df, notes = report.clean(df)
    unfinished = df.loc[df["status"] != records.FINISHED, "run"].nunique()
    if unfinished:
        note(f"{unfinished} run(s) not finished; their curves stop where they stopped")
    baseline = args.baseline if args.baseline is not None else targets.BASELINE
    try:   # before anything is written: a wrong baseline would make every table wrong
        targets.choose(df, baseline, required=args.baseline is not None)
    except targets.BaselineError as err:
        return fail(str(err), 2)
    for line in notes:
        note(line)
    figures = report.FIGURES if only is None else {n: report.FIGURES[n] for n in only}
    try:
        runs_csv = df[[c for c in dict.fromkeys(merged_columns) if c in df.columns]]
        records.atomic_write(out / merge.RUNS_CSV, runs_csv.to_csv(index=False).encode())
        result = report.make_all(df, out, formats, ks, figures=figures, baseline=baseline)
    except records.OutputError as err:
        return fail(str(err), 1)
    for line in result.notes:
        note(line)
    for line in result.skipped:
        note(f"skipped {line}")
    print(result.speedup_md)
    print(f"{PROG}: {df['run'].nunique()} runs -> {len(result.written) + 1} files in {out}", file=sys.stderr)
    for failure in result.failed:
        print(f"{PROG}: error: figure {failure}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())

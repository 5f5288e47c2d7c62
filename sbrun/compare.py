"""sbrun-compare: the equal-compute protocol in one command.

    sbrun-compare NAME --methods traditional sb stale_sb random_matched --budgets 2 4 8 \\
        --seeds 0 1 2 3 4 --lrs 0.01 0.02 0.05 -- dataset=mnist data_dir=../shared/data

1. Every method trains under the same `work` budgets (linear decay to zero within the budget, so
   no method is judged mid-schedule), with batch-norm statistics re-estimated before every
   evaluation and a seeded validation split held out of the training set.
2. The learning rate is tuned per method on validation error (at one budget, or at each), never
   on the test set. Tuning runs are ordinary jobs of the same named sweep, so a final job whose
   settings equal a tuning job's is that job (skipped, not re-run).
3. Work is charged with measured costs (a costs.json from sbrun-bench, or measured here once), or
   with the paper's 1:3 when asked (`--costs paper`).
4. The verdict (verdict.md, comparison.csv, lr_choice.csv, reach.csv, finals.csv, runs.csv, pareto.png) pairs every
   method with the baseline by seed at each budget.

Re-running the same command skips finished jobs and only redoes the analysis; adding seeds or
budgets runs only the new jobs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from . import verdict
from .config import OPERATIONAL, ConfigError, key_kind
from .merge import NoRunsError, merge_runs
from .records import atomic_write

log = logging.getLogger("sbrun")
FAILED, BAD_INPUT, STOPPED = 1, 2, 3     # sbrun's exit codes


@dataclass
class Protocol:
    name: str
    methods: List[str]
    budgets: List[float]
    seeds: List[int]
    lrs: List[float]
    tune_budget: Optional[float]          # None: tune at every budget
    tune_seeds: List[int]
    val_fraction: float = 0.1
    bn_recalibrate: int = 1024
    costs: str = "measure"                # measure | paper | PATH to a costs.json
    eval_every: Optional[float] = None    # work units between evaluations; None: the smallest budget
    baseline: str = "traditional"
    target_error: Optional[float] = None
    out_dir: Path = Path("results")
    overrides: List[str] = field(default_factory=list)
    workers: int = 1                      # sweeps run at once (methods split between them)

    def __post_init__(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ConfigError(what)
        need(bool(self.name) and "/" not in self.name and "," not in self.name,
             f"NAME={self.name!r} is invalid; allowed: a directory name without '/' or ','")
        need(len(self.methods) >= 2, f"--methods {' '.join(self.methods)} is invalid; allowed: two or more samplers")
        need(self.baseline in self.methods,
             f"--baseline {self.baseline} is invalid; allowed: one of --methods ({', '.join(self.methods)})")
        need(all(b > 0 for b in self.budgets), f"--budgets {self.budgets} is invalid; allowed: numbers > 0")
        need(all(lr > 0 for lr in self.lrs), f"--lrs {self.lrs} is invalid; allowed: numbers > 0")
        need(len(set(self.seeds)) >= 2, f"--seeds {self.seeds} is invalid; allowed: two or more distinct seeds "
                                        f"(paired intervals need two)")
        need(0 < self.val_fraction < 0.5,
             f"--val-fraction {self.val_fraction} is invalid; allowed: a number in (0, 0.5)")
        need(self.tune_budget is None or self.tune_budget in self.budgets,
             f"--tune-budget {self.tune_budget} is invalid; allowed: 'each' or one of --budgets")
        need(self.workers >= 1, f"--workers {self.workers} is invalid; allowed: an integer >= 1")
        need(set(self.tune_seeds) <= set(self.seeds),
             f"--tune-seeds {self.tune_seeds} is invalid; allowed: a subset of --seeds")

    @property
    def tuned_per_budget(self) -> bool:
        return self.tune_budget is None

    @property
    def sweep_dir(self) -> Path:
        return self.out_dir / "multirun" / self.name

    @property
    def report_dir(self) -> Path:
        return self.out_dir / "compare" / self.name


def fmt(values: Sequence) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def common_overrides(pr: Protocol, costs: List[str]) -> List[str]:
    every = pr.eval_every if pr.eval_every is not None else min(pr.budgets)
    return [f"name={pr.name}", f"out_dir={pr.out_dir}", "budget.unit=work", "schedule=linear",
            f"dataset.val_fraction={pr.val_fraction:g}", f"bn_recalibrate={pr.bn_recalibrate}",
            "eval.unit=work", f"eval.every={every:g}", "progress=off", "plots=false", *costs, *pr.overrides]


def tuning_jobs(pr: Protocol) -> List[List[str]]:
    """Sweeps over method x lr at the tuning budget(s) and seeds: one, or one per worker (the
    methods dealt out in turn)."""
    budgets = pr.budgets if pr.tuned_per_budget else [pr.tune_budget]
    groups = [pr.methods[i::pr.workers] for i in range(min(pr.workers, len(pr.methods)))]
    return [[f"sampler={fmt(methods)}", f"optim.lr={fmt(pr.lrs)}", f"budget.amount={fmt(budgets)}",
             f"seed={fmt(pr.tune_seeds)}"] for methods in groups]


def final_jobs(pr: Protocol, choice: pd.DataFrame) -> List[List[str]]:
    """One sweep per (method, chosen lr) over its budgets and every seed."""
    jobs = []
    for _, r in choice.iterrows():
        budgets = [r[verdict.BUDGET]] if pr.tuned_per_budget else pr.budgets
        jobs.append([f"sampler={r[verdict.METHOD]}", f"optim.lr={fmt([float(r['lr'])])}",
                     f"budget.amount={fmt([float(b) for b in budgets])}", f"seed={fmt(pr.seeds)}"])
    return jobs


class SweepStopped(RuntimeError):
    """A sweep ended by a signal (or anything but success and failed jobs): choosing from its
    partial results would be wrong, so the protocol stops; re-running the command continues."""


def run_sweeps(sweeps: List[List[str]], workers: int = 1) -> None:
    """Each `sbrun --multirun` in a child process, `workers` at a time (a Hydra launcher from the
    overrides applies). A job that fails (diverges at a large lr) is a result, not an error (exit
    1); bad input (exit 2) and a stopped sweep (a signal) end the protocol here, once every
    started sweep has ended."""
    env = dict(os.environ)
    if workers > 1 and "OMP_NUM_THREADS" not in env:     # the cores split between the workers
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    pending, running, codes = list(sweeps), [], []
    while pending or running:
        while pending and len(running) < workers:
            cmd = [sys.executable, "-m", "sbrun", "--multirun", *pending.pop(0)]
            log.info("sbrun-compare: %s", " ".join(cmd[2:]))
            running.append((cmd, subprocess.Popen(cmd, env=env)))
        cmd, proc = running.pop(0)
        codes.append((proc.wait(), cmd))
    for code, cmd in codes:
        if code == BAD_INPUT:
            raise ConfigError(f"sbrun refused the sweep (exit 2) for: sbrun {' '.join(cmd[3:])}")
    for code, _ in codes:
        if code not in (0, FAILED):
            raise SweepStopped(f"the sweep stopped (exit {code}); run the same sbrun-compare command again to continue")


def cost_overrides(pr: Protocol) -> List[str]:
    """How work is charged: the paper's 1:3, a given costs.json, or one measured here once."""
    if pr.costs == "paper":
        return ["budget.cost_select=1", "budget.cost_train=3"]
    path = Path(pr.costs) if pr.costs != "measure" else pr.report_dir / "costs.json"
    if pr.costs == "measure" and not path.exists():
        measure_costs(pr, path)
    if not path.is_file():
        raise ConfigError(f"--costs {pr.costs} is invalid: no such file; allowed: measure, paper or a costs.json "
                          f"written by sbrun-bench")
    add_proxy_costs(pr, path)
    return [f"budget.costs={path}"]


def add_proxy_costs(pr: Protocol, path: Path) -> None:
    """Measure each proxy scorer a method uses (sampler=sb_proxy, proxy_topk) that the costs file
    has no timings for, and add them as a `proxies` entry: a proxy on a CPU costs far more than its
    multiply-add ratio says, so work charges what it measured. Runs that use no proxy read only
    f_sel and fb, which stay as they are."""
    from .bench.probe import compose_configs, measure_proxy_costs
    from .budget import measured_proxy
    from .proxy import proxy_setup
    costs = json.loads(path.read_text())
    runs = {method: [*pr.overrides, f"sampler={method}"] for method in pr.methods}
    for method, cfg in compose_configs(runs).items():
        if not cfg.scoring.proxy.enabled or measured_proxy(costs, proxy_setup(cfg.scoring.proxy)) is not None:
            continue
        entry = measure_proxy_costs([*runs[method], "progress=off", "plots=false"])
        costs["proxies"] = [*costs.get("proxies", []), entry]
        atomic_write(path, (json.dumps(costs, indent=2) + "\n").encode())
        log.info("sbrun-compare: measured %s's proxy: f_sel %.2fx, f+b %.2fx the main model's -> %s", method,
                 entry["proxy_f_sel"] / entry["f_sel"], entry["proxy_fb"] / entry["fb"], path)


def measure_costs(pr: Protocol, path: Path) -> None:
    """f_sel and f+b of this model on this data, timed with sbrun-bench's cost probe."""
    from .bench.probe import measure_costs as probe
    costs = probe([*pr.overrides, "progress=off", "plots=false"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs, indent=2) + "\n")
    log.info("sbrun-compare: measured f_sel %.3g s, f+b %.3g s per example (ratio 1:%.2f) -> %s",
             costs["f_sel"], costs["fb"], costs["fb"] / costs["f_sel"], path)


def load_runs(pr: Protocol, base: List[str]) -> pd.DataFrame:
    """Every evaluation row of this protocol's jobs (tuning included): the runs of the sweep whose
    command line has every non-operational override of `base` (a job the same name ran with other
    settings, e.g. another costs file, is not this protocol's)."""
    try:
        runs = merge_runs([pr.sweep_dir])
    except NoRunsError as err:
        raise ConfigError(f"{pr.sweep_dir}: {err}") from None
    wanted = runs["sampler"].isin(pr.methods) & runs["seed"].isin(pr.seeds) & runs["lr"].isin(pr.lrs) \
        & runs["budget_amount"].isin(pr.budgets) & runs["overrides"].map(lambda o: same_settings(base, json.loads(o)))
    return runs[wanted]


def same_settings(base: List[str], overrides: List[str]) -> bool:
    """Whether a job's overrides set every non-operational key of `base` to the same value (Hydra
    records booleans capitalised, so values compare case-insensitively)."""
    have = dict(o.split("=", 1) for o in overrides if "=" in o)
    return all(have.get(k, "").lower() == v.lower() for k, v in (o.split("=", 1) for o in base)
               if key_kind(k) != OPERATIONAL)


def compare(pr: Protocol) -> Path:
    """Run (or continue) the protocol and write its verdict; returns verdict.md's path."""
    costs = cost_overrides(pr)
    base = common_overrides(pr, costs)
    run_sweeps([base + job for job in tuning_jobs(pr)], pr.workers)
    finals = verdict.last_rows(load_runs(pr, base))
    tuning = finals if pr.tuned_per_budget else finals[finals["budget_amount"] == pr.tune_budget]
    choice = verdict.choose_lr(tuning, per_budget=pr.tuned_per_budget, seeds=pr.tune_seeds)
    run_sweeps([base + job for job in final_jobs(pr, choice)], pr.workers)
    runs = load_runs(pr, base)
    chosen = verdict.at_chosen_lr(verdict.last_rows(runs), choice)
    return write_report(pr, runs, chosen, choice, costs)


def write_report(pr: Protocol, runs: pd.DataFrame, chosen: pd.DataFrame, choice: pd.DataFrame,
                 costs: List[str]) -> Path:
    from .plots.pareto import pareto
    out = pr.report_dir
    out.mkdir(parents=True, exist_ok=True)
    table = verdict.paired_table(chosen, pr.baseline)
    target = pr.target_error if pr.target_error is not None else verdict.default_target(table, pr.baseline)
    reach = verdict.smallest_budget(table, target)
    runs.to_csv(out / "runs.csv", index=False)          # every evaluation of every job, tuning included
    chosen.to_csv(out / "finals.csv", index=False)      # the last evaluation of each run at its chosen lr
    choice.to_csv(out / "lr_choice.csv", index=False)
    table.to_csv(out / "comparison.csv", index=False)
    reach.to_csv(out / "reach.csv", index=False)
    pareto(chosen, out / "pareto", pr.baseline)
    header = [f"# sbrun-compare {pr.name}", "",
              f"Methods {', '.join(pr.methods)}; work budgets {fmt(pr.budgets)}; seeds {fmt(pr.seeds)}; "
              f"lr grid {fmt(pr.lrs)}, tuned on a {pr.val_fraction:g} validation split "
              f"{'at every budget' if pr.tuned_per_budget else f'at budget {pr.tune_budget:g}'} with seeds "
              f"{fmt(pr.tune_seeds)}; batch-norm re-estimated on {pr.bn_recalibrate} examples; work charged by "
              f"{' '.join(costs)}; extra overrides: {' '.join(pr.overrides) or 'none'}.",
              f"Target error for 'smallest budget': {100 * target:.2f}% "
              f"({'given' if pr.target_error is not None else f'1.1 x {pr.baseline} at its largest budget'})."]
    path = out / "verdict.md"
    path.write_text(verdict.report(table, choice, reach, pr.baseline, header))
    return path


def parse(argv: Optional[Sequence[str]] = None) -> Protocol:
    ap = argparse.ArgumentParser(
        prog="sbrun-compare", description="The equal-compute protocol: tune lr per method on a validation split, "
        "train every method at the same work budgets and seeds, and pair each against the baseline.",
        epilog="Arguments after `--` are sbrun overrides for every job (dataset=..., model=..., "
               "hydra/launcher=joblib). Outputs: OUT_DIR/multirun/NAME (the runs) and OUT_DIR/compare/NAME "
               "(verdict.md, comparison.csv, lr_choice.csv, reach.csv, finals.csv, runs.csv, pareto.png).")
    ap.add_argument("name", help="the comparison's name: its sweep is OUT_DIR/multirun/NAME (re-running resumes)")
    ap.add_argument("--methods", nargs="+", required=True, help="sampler names, e.g. traditional sb stale_sb")
    ap.add_argument("--budgets", nargs="+", type=float, required=True, help="work budgets (Traditional epochs)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds (default 0-4)")
    ap.add_argument("--lrs", nargs="+", type=float, required=True, help="learning-rate grid to tune over")
    ap.add_argument("--tune-budget", default=None,
                    help="tune at this budget (default: the middle one); 'each' tunes at every budget")
    ap.add_argument("--tune-seeds", nargs="+", type=int, default=None, help="seeds of the tuning runs (default: all)")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="validation split (default 0.1)")
    ap.add_argument("--bn-recalibrate", type=int, default=1024, help="examples for batch-norm re-estimation")
    ap.add_argument("--costs", default="measure", help="measure (default), paper (1:3), or a costs.json")
    ap.add_argument("--eval-every", type=float, default=None,
                    help="work between evaluations (default: smallest budget)")
    ap.add_argument("--baseline", default="traditional", help="the method others are paired against")
    ap.add_argument("--target-error", type=float, default=None,
                    help="error (fraction) for 'smallest budget'; default 1.1 x the baseline's at its largest budget")
    ap.add_argument("--out-dir", type=Path, default=Path("results"))
    ap.add_argument("--workers", type=int, default=1,
                    help="sweeps at once, the methods split between them (each gets cores / workers threads)")
    ap.add_argument("overrides", nargs="*", help="sbrun overrides for every job (after --)")
    a = ap.parse_intermixed_args(argv)
    budgets = sorted(a.budgets)
    if a.tune_budget is None:
        tune = budgets[len(budgets) // 2]
    elif a.tune_budget == "each":
        tune = None
    else:
        try:
            tune = float(a.tune_budget)
        except ValueError:
            raise ConfigError(f"--tune-budget {a.tune_budget} is invalid; "
                              f"allowed: 'each' or one of --budgets") from None
    return Protocol(name=a.name, methods=a.methods, budgets=budgets, seeds=a.seeds, lrs=sorted(a.lrs), tune_budget=tune,
                    tune_seeds=a.tune_seeds or a.seeds, val_fraction=a.val_fraction, bn_recalibrate=a.bn_recalibrate,
                    costs=a.costs, eval_every=a.eval_every, baseline=a.baseline, target_error=a.target_error,
                    out_dir=a.out_dir, overrides=a.overrides, workers=a.workers)


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = compare(parse(argv))
    except ConfigError as err:
        print(f"sbrun-compare: error: {err}", file=sys.stderr)
        sys.exit(BAD_INPUT)
    except SweepStopped as err:
        print(f"sbrun-compare: {err}", file=sys.stderr)
        sys.exit(STOPPED)
    except ValueError as err:       # the runs cannot answer (e.g. the baseline has no finished run)
        print(f"sbrun-compare: error: {err}", file=sys.stderr)
        sys.exit(FAILED)
    print(path.read_text())
    print(f"written: {path.parent}")


if __name__ == "__main__":
    main()

"""The benchmark itself: every config composed up front, one warm-up epoch per variant, then
interleaved rounds (each variant's epochs, the cost probe and the reference loops), with the
tables and costs files rewritten after every round.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd

from ..build import Parts, resolve_device
from ..config import Config
from ..data.storage import LazyImages
from .epochs import VARIANTS, Variant, build_variants, warm_up
from .probe import CostProbe, build_scorers, compose_configs, describe, load_average, scoring_batch
from .references import LoaderLoop, PlainLoop, count_syncs, sync_share
from .report import bench_table, scoring_frame, write_costs, write_tables

QUIET = ["plots=false", "progress=off", "loss_snapshots=0", "extremes=0", "checkpoint.enabled=false",
         "epochs=1000"]
# Scoring options: each sets the scoring forward's precision explicitly, so the grid stays 2 x 2
# whatever the preset's training precision ("fp32" scores in fp32 even under precision=bf16).
SCORING = {"fp32": ["precision=fp32", "scoring.precision=fp32"],
           "scale": ["precision=fp32", "scoring.precision=fp32", "scoring.scale={scale}"],
           "bf16": ["scoring.precision=bf16"],
           "scale_bf16": ["scoring.precision=bf16", "scoring.scale={scale}"]}
PROXY = ["precision=fp32", "scoring.precision=fp32", "scoring.proxy.width_factor={proxy}"]   # --proxy F


@dataclass
class Options:
    repeats: int = 3
    cost_reps: int = 20
    loader_workers: int = 2
    scoring: Tuple[str, ...] = tuple(SCORING)
    scale: float = 0.5
    proxy: Optional[float] = None            # a proxy scorer at this width factor (a scoring table row)
    time_limit_s: Optional[float] = None     # start no new round after this
    preset: str = "custom"


def compose_all(base: List[str], opts: Options) -> Dict[str, Config]:
    """Every variant's and scoring option's config, composed up front: a bad override fails in
    seconds, not after the warm-up."""
    named = {name: base + QUIET + extra for name, extra, _ in VARIANTS}
    named.update({f"scoring {name}": base + QUIET + ["sampler=sb"] + [o.format(scale=opts.scale) for o in SCORING[name]]
                  for name in opts.scoring})
    if opts.proxy is not None:
        named["scoring proxy"] = base + QUIET + ["sampler=sb"] + [o.format(proxy=opts.proxy) for o in PROXY]
    return compose_configs(named)


@dataclass
class Rounds:
    """What every round times, and the files it rewrites. The reference loops hold the training
    set in memory: `plain` and `loader` are None for images read from disk."""
    variants: Dict[str, Variant]
    scorers: Dict[str, Parts]
    probe: CostProbe
    info: dict
    out_dir: Path
    syncs: Optional[int]
    plain: Optional[PlainLoop]
    loader: Optional[LoaderLoop]
    refs: Dict[str, List[float]] = field(default_factory=lambda: {
        "plain loop": [], "dataloader loop": [], "plain loop (sync/step)": []})

    def run(self, r: int, repeats: int, log) -> Dict[str, pd.DataFrame]:
        """Round `r` (from 0): its epochs and cost sample, then the files over every round so far."""
        for v in self.variants.values():
            v.train()
        self.probe.sample()
        if self.plain is not None:
            self.refs["plain loop"].append(self.plain.epoch())
            self.refs["dataloader loop"].append(self.loader.epoch())
            if self.syncs is not None:
                self.refs["plain loop (sync/step)"].append(self.plain.epoch(sync_every_step=True))
        log(f"round {r + 1}/{repeats}: " + ", ".join(
            [f"{n} {v.samples[-1]['epoch_s']:.2f}s" for n, v in self.variants.items()] +
            [f"{n} {t[-1]:.2f}s" for n, t in self.refs.items() if t]))
        return self.write(r + 1)

    def write(self, rounds: int) -> Dict[str, pd.DataFrame]:
        """costs*.json, bench.csv/.md and scoring.csv from every round so far (the costs: medians)."""
        info = self.info
        info["load_after"] = load_average()
        costs, info["cost_samples"] = self.probe.median(), len(self.probe.samples)
        write_costs(self.out_dir, costs, self.scorers, info)
        tables = {"bench": bench_table(self.variants, self.refs, costs, info, rounds),
                  "scoring": scoring_frame(self.scorers, self.variants, costs)}
        sb2 = tables["bench"].set_index("variant").loc["sb beta=2", "epoch_s_median"]
        steps = self.plain.steps if self.plain is not None else 0
        write_tables(self.out_dir, tables, info, sync_share(self.syncs, self.refs["plain loop"],
                                                            self.refs["plain loop (sync/step)"], steps, sb2))
        return tables


def prepare(configs: Dict[str, Config], opts: Options, base: List[str], load_before: str, tmp: Path,
            out_dir: Path, log) -> Rounds:
    """Build and warm up every variant, take the first cost sample (costs.json is written from it
    before any round), count the host syncs and prime the reference loops."""
    variants = build_variants(configs, resolve_device(configs["traditional"].device), tmp)
    trad = variants["traditional"].parts
    info = describe(trad, opts.preset, base, load_before)
    log(f"device: {info['device_name']} | {trad.n} training examples | model {info['model']} | "
        f"data path {info['data_path']} | precision {info['precision']} | load {load_before}")
    log("warm-up: one priming epoch per variant (not timed)")
    warm_up(variants)

    x, y = scoring_batch(trad)
    scorers = build_scorers({name[len("scoring "):]: cfg for name, cfg in configs.items()
                             if name.startswith("scoring ")}, trad, x, y, tmp, log)
    probe = CostProbe(trad, scorers, x, y, opts.cost_reps)
    costs = probe.sample()
    log(f"f_sel = {costs['f_sel'] * 1e6:.1f} us/example, f+b = {costs['fb'] * 1e6:.1f} us/example "
        f"(ratio f+b / f_sel = {costs['fb'] / costs['f_sel']:.2f}); scoring options: "
        + ", ".join(f"{name} {costs[name] * 1e6:.1f}" for name in scorers)
        + "".join(f"; proxy f+b {costs[k] * 1e6:.1f}" for k in costs if k.endswith("proxy_fb")))
    out_dir.mkdir(parents=True, exist_ok=True)
    info["cost_samples"] = 1
    write_costs(out_dir, costs, scorers, info)

    syncs = count_syncs(variants["sb beta=2"])
    in_memory = not isinstance(trad.data.train.images, LazyImages)
    plain, loader = (PlainLoop(trad), LoaderLoop(trad, opts.loader_workers)) if in_memory else (None, None)
    for ref in (plain, loader):
        if ref is not None:
            ref.epoch()
    return Rounds(variants, scorers, probe, info, out_dir, syncs, plain, loader)


def run_bench(base: List[str], opts: Options, out_dir: Path, log=print) -> Dict[str, pd.DataFrame]:
    """Run the benchmark and write its files into `out_dir`; returns the main and scoring tables.
    The tables are rewritten after every round, so a run cut short keeps the rounds it finished."""
    t_start = time.perf_counter()
    load_before = load_average()
    configs = compose_all(base, opts)
    tables = {}
    with tempfile.TemporaryDirectory(prefix="sbrun-bench-") as tmp:
        rounds = prepare(configs, opts, base, load_before, Path(tmp), out_dir, log)
        for r in range(opts.repeats):
            tables = rounds.run(r, opts.repeats, log)
            if opts.time_limit_s is not None and time.perf_counter() - t_start > opts.time_limit_s \
                    and r + 1 < opts.repeats:
                log(f"time limit of {opts.time_limit_s:g} s reached: {r + 1} of {opts.repeats} rounds done")
                break
    return tables

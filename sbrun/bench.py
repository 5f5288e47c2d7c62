"""`sbrun-bench`: how close SB and Stale-SB come to their cost-model speedup.

Per-example costs f_sel (scoring forward) and f+b (training forward + backward + step) are
measured directly; the cost model then predicts the per-epoch speedup over Traditional,
(f+b) / (f_sel/n + s (f+b)), with s the backprop fraction each variant actually had. Every
variant's epochs are measured interleaved with the others (round-robin, `--repeats` rounds), so
drift on a shared machine hits them all alike. Two references run in the same rounds: a plain
hand-written PyTorch loop on the same device-resident data (sbrun's own overhead) and a
torchvision DataLoader pipeline with the same augmentation (what the data path buys). The
scoring options (`scoring.scale`, `scoring.precision`) get their own f_sel and cost-model bound, and
so does a proxy scorer (`--proxy F`: scoring.proxy.width_factor=F), whose bound also pays its training.

Everything runs through sbrun's public pieces: `build.build` for the parts, `loop.run_epoch`,
`loop.score` and `loop.forward` for the work, `state.RunState` / `state.EpochState` for the state.
Outputs (in --out): bench.csv, bench.md, scoring.csv, and costs.json (f_sel and f+b, for
`budget.unit=work budget.costs=<it>`), plus costs_<option>.json per scoring option.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pandas as pd
import torch
import torch.nn.functional as F

from . import loop, proxy
from .build import Parts, build, build_model, build_optimizer, resolve_device
from .config import Config, ConfigError
from .data import DataError, augment
from .data.storage import LazyImages
from .data.stream import Augmenter
from .hooks import Hooks
from .messages import one_line
from .proxy import proxy_setup
from .records import atomic_write, write_json
from .samplers.rules import cost_model_speedup, expected_fraction
from .state import EpochState, RunState

PRESETS = {
    # Real MNIST from --data-dir on a CPU, with the small CNN.
    "cpu": ["dataset=mnist", "model=cnn", "model.width=16", "dataset.subset=12800"],
    # CIFAR-shaped data with crop+flip+cutout and ResNet-18 in bf16, channels_last, as on the paper's GPUs.
    "gpu": ["dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "dataset.num_classes=10",
            "dataset.n_train=50000", "dataset.n_test=1000", "dataset.mean=[0.5,0.5,0.5]",
            "dataset.std=[0.25,0.25,0.25]", "dataset.crop_padding=4", "dataset.flip=true",
            "dataset.cutout=16", "model=resnet18", "precision=bf16", "channels_last=true"],
    # Seconds: checks that the bench works end to end (CI, gpu_check.sh on a CPU); the numbers mean nothing.
    "smoke": ["dataset=synthetic", "model=cnn", "model.width=8", "dataset.n_train=512", "dataset.n_test=64",
              "batch_size=32"],
}
# (name, overrides, epochs per timed sample: Stale-SB's is one full fresh/stale cycle)
VARIANTS = [("traditional", ["sampler=traditional"], 1),
            ("sb beta=1", ["sampler=sb", "beta=1"], 1),
            ("sb beta=2", ["sampler=sb", "beta=2"], 1),
            ("sb beta=3", ["sampler=sb", "beta=3"], 1),
            ("stale_sb n=2", ["sampler=stale_sb", "beta=2", "sampler.staleness=2"], 2),
            ("stale_sb n=3", ["sampler=stale_sb", "beta=2", "sampler.staleness=3"], 3)]
QUIET = ["plots=false", "progress=off", "loss_snapshots=0", "extremes=0", "checkpoint.enabled=false",
         "epochs=1000"]
# Scoring options: each sets the scoring forward's precision explicitly, so the grid stays 2 x 2
# whatever the preset's training precision ("fp32" scores in fp32 even under precision=bf16).
SCORING = {"fp32": ["precision=fp32", "scoring.precision=fp32"],
           "scale": ["precision=fp32", "scoring.precision=fp32", "scoring.scale={scale}"],
           "bf16": ["scoring.precision=bf16"],
           "scale_bf16": ["scoring.precision=bf16", "scoring.scale={scale}"]}
PROXY = ["precision=fp32", "scoring.precision=fp32", "scoring.proxy.width_factor={proxy}"]   # --proxy F
COST_EPOCH = 10_000       # the stream epoch whose first chunk the costs are timed on (never trained)
NO_HOOKS = Hooks()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], None], device: torch.device, reps: int) -> float:
    """Median seconds of `reps` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sgd_step(forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
             x: torch.Tensor, y: torch.Tensor) -> None:
    """One plain SGD step: what f+b measures, and what the reference loops repeat."""
    loss = F.cross_entropy(forward(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# --- sbrun's own epochs --------------------------------------------------------------------------

def compose_configs(named: Dict[str, List[str]]) -> Dict[str, Config]:
    """Validated configs (a bad override is one ConfigError line, as on sbrun's command line)."""
    from .cli import composer
    from .config import validate

    with composer() as compose:
        return {name: validate(compose(overrides)) for name, overrides in named.items()}


def timed_epoch(p: Parts, run: RunState, epoch: int) -> Tuple[float, Dict[str, float], EpochState]:
    """Train epoch `epoch` with sbrun's loop (no evaluation, no outputs). Returns its host
    wall-clock seconds (the device synchronised at both ends), the loop's phase seconds and the
    epoch's state."""
    ep = EpochState.new(epoch, p.local_batch, p.dist.rank, p.device)
    run.epoch = epoch
    sync(p.device)
    t = time.perf_counter()
    loop.run_epoch(p, run, ep, NO_HOOKS)
    phases = p.timer.end_epoch()        # synchronises on CUDA
    wall = time.perf_counter() - t
    p.sampler.end_epoch(epoch)
    run.epoch = epoch + 1
    return wall, phases, ep


@dataclass
class Variant:
    name: str
    parts: Parts
    run: RunState
    cycle: int                      # epochs per timed sample
    next_epoch: int = 0
    samples: List[dict] = field(default_factory=list)

    def train(self) -> dict:
        """One timed sample: `cycle` epochs, averaged."""
        wall = book = 0.0
        backprops = chunks = loaded = scored = 0
        for _ in range(self.cycle):
            seconds, phases, ep = timed_epoch(self.parts, self.run, self.next_epoch)
            self.next_epoch += 1
            wall += seconds
            book += phases["bookkeeping"]
            backprops += ep.global_backprops
            chunks += ep.n_chunks
            loaded += ep.loaded
            scored += ep.select_forwards
        per_example = self.parts.n * self.cycle
        sample = {"epoch_s": wall / self.cycle, "bookkeeping_s": book / self.cycle,
                  "frac": backprops / per_example, "chunks": chunks / self.cycle,
                  "loaded_frac": loaded / per_example, "scored_frac": scored / per_example}
        self.samples.append(sample)
        return sample


def scoring_batch(p: Parts) -> Tuple[torch.Tensor, torch.Tensor]:
    """A full selection chunk of augmented training inputs, from either data path."""
    p.stream.start_epoch(COST_EPOCH)
    return next(iter(p.stream.chunks(p.chunk))).images()


def f_sel(p: Parts, x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    """Seconds per example of the parts' scoring forward (loop.score: its scale and precision included)."""
    x = x.contiguous(memory_format=p.memory_format)
    return median_time(lambda: loop.score(p, x, y), p.device, reps) / x.shape[0]


def data_cost(p: Parts, reps: int) -> float:
    """d: seconds per example of reading a chunk from the run's storage (load, decode, augment),
    as a selective epoch's on-demand read does it (stream.fetch, with the run's num_workers). A
    full epoch's prefetching may hide it behind compute; this is the cost when it does not."""
    p.stream.start_epoch(COST_EPOCH)
    idx = next(iter(p.stream.chunks(p.chunk))).idx
    return median_time(lambda: p.stream.fetch(idx), p.device, reps) / idx.numel()


def f_b(p: Parts, x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    """Seconds per example of a training step through loop.forward (compiled where compile=true)."""
    def step():
        p.net.train()
        sgd_step(lambda v: loop.train_forward(p, v), p.optimizer, x, y)
    return median_time(step, p.device, reps) / x.shape[0]


def proxy_f_b(p: Parts, x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    """Seconds per example of the proxy's own training step (proxy.train_step, as the loop runs it)."""
    lr = p.proxy.optimizer.param_groups[0]["lr"]
    return median_time(lambda: proxy.train_step(p.proxy, x, y, lr, p.timer, p.autocast), p.device, reps) / x.shape[0]


def measure_costs(overrides: List[str], reps: int = 20) -> Dict[str, object]:
    """The per-example costs `budget.costs` reads (f_sel, fb, in seconds), measured on the model and
    data that `overrides` compose to, without the epoch benchmark (sbrun-compare's cost step). The
    file records the same setup as sbrun-bench's, so a run on another setup is warned about."""
    cfg = compose_configs({"probe": [*overrides, "sampler=traditional"]})["probe"]
    with tempfile.TemporaryDirectory() as tmp:
        p = build(cfg, Path(tmp) / "probe", resolve_device(cfg.device))
        x, y = scoring_batch(p)
        f_sel(p, x, y, 2)      # warm-up: first calls allocate
        costs = {"f_sel": f_sel(p, x, y, reps), "fb": f_b(p, x[:p.local_batch], y[:p.local_batch], reps),
                 "d": data_cost(p, max(3, reps // 4))}
        where = describe(p, "sbrun-compare", list(overrides), _load())
    return {**costs, "unit": "seconds per example", "cost_reps": reps, **where}


def measure_proxy_costs(overrides: List[str], reps: int = 20) -> Dict[str, object]:
    """A proxy scorer's per-example costs (proxy_f_sel, proxy_fb) beside the main model's f_sel and
    fb timed in the same probe, for a costs.json `proxies` entry (budget.measured_proxy charges
    their ratios). `overrides` compose to a run with scoring.proxy set (e.g. sampler=sb_proxy)."""
    cfg = compose_configs({"probe": list(overrides)})["probe"]
    if cfg.scoring.proxy.width_factor is None and cfg.scoring.proxy.model.get("_target_") is None:
        raise ConfigError(f"{' '.join(overrides)} sets no scoring.proxy; allowed: overrides with a proxy scorer")
    main = measure_costs([*overrides, "scoring.proxy.width_factor=null", "scoring.proxy.model._target_=null"], reps)
    with tempfile.TemporaryDirectory() as tmp:
        q = build(cfg, Path(tmp) / "probe", resolve_device(cfg.device))
        x, y = scoring_batch(q)
        f_sel(q, x, y, 2)
        b = q.local_batch
        timed = {"proxy_f_sel": f_sel(q, x, y, reps), "proxy_fb": proxy_f_b(q, x[:b], y[:b], reps)}
    return {"proxy": proxy_setup(cfg.scoring.proxy), **timed, "f_sel": main["f_sel"], "fb": main["fb"]}


class CostProbe:
    """f_sel, f+b and each scoring option's f_sel, timed on one fixed chunk once per round (so
    they see the same load as the round's epochs); the tables use the medians over rounds."""

    def __init__(self, trad: Parts, scorers: Dict[str, Parts], x: torch.Tensor, y: torch.Tensor, reps: int):
        self.trad, self.scorers, self.x, self.y, self.reps = trad, scorers, x, y, reps
        self.samples: List[Dict[str, float]] = []

    def sample(self) -> Dict[str, float]:
        p, x, y = self.trad, self.x, self.y
        got = {"f_sel": f_sel(p, x, y, self.reps), "fb": f_b(p, x[:p.local_batch], y[:p.local_batch], self.reps),
               "d": data_cost(p, max(3, self.reps // 4))}
        got.update({name: f_sel(q, x, y, self.reps) for name, q in self.scorers.items()})
        got.update({f"{name} proxy_fb": proxy_f_b(q, x[:p.local_batch], y[:p.local_batch], self.reps)
                    for name, q in self.scorers.items() if q.proxy is not None})
        self.samples.append(got)
        return got

    def median(self) -> Dict[str, float]:
        return {k: statistics.median(s[k] for s in self.samples) for k in self.samples[0]}


def build_scorers(configs: Dict[str, Config], trad: Parts, x: torch.Tensor, y: torch.Tensor, tmp: Path,
                  log) -> Dict[str, Parts]:
    """Parts for each scoring option (same data); an option the model cannot take (on the chunk
    x, y) is left out."""
    scorers = {}
    for name, cfg in configs.items():
        try:
            p = build(cfg, tmp / f"scoring_{name}", trad.device, data=trad.data)
        except ConfigError as err:      # --proxy with a model that takes no width
            log(f"scoring {name}: left out ({err})")
            continue
        try:
            f_sel(p, x, y, 1)
        except RuntimeError as err:     # a model with a fixed input size (mlp, linear) cannot score downsampled
            log(f"scoring {name}: left out, {cfg.model.name} cannot score at scoring.scale={cfg.scoring.scale:g} "
                f"({one_line(err, limit=120)})")
            continue
        scorers[name] = p
    return scorers


# --- reference loops -----------------------------------------------------------------------------

class PlainLoop:
    """A hand-written epoch over the same device-resident uint8 data and batch augmentation."""

    def __init__(self, p: Parts):
        self.device, self.batch = p.device, p.local_batch
        self.images = p.data.train.images.to(p.device)      # either data path: the CPU copy in p.data
        self.labels = p.data.train.labels.to(p.device)
        self.memory_format, self.autocast = p.memory_format, p.autocast
        self.model = build_model(p.cfg, p.data.spec).to(p.device, memory_format=p.memory_format)
        self.opt = build_optimizer(self.model, p.cfg.optim)
        self.aug = Augmenter(p.data.spec, p.device)
        self.gen = torch.Generator(device=p.device).manual_seed(0)
        self.steps = 0          # steps of the last epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.model(x.contiguous(memory_format=self.memory_format))

    def batches(self):
        perm = torch.randperm(self.labels.numel(), generator=self.gen, device=self.device)
        for idx in perm.split(self.batch):
            yield self.aug.train(self.images[idx], self.gen), self.labels[idx]

    def epoch(self, sync_every_step: bool = False) -> float:
        """Seconds for one epoch; `sync_every_step` drains the device queue after each step (a
        host sync like sbrun's per-chunk one) to price such a sync."""
        self.model.train()
        self.steps = 0
        sync(self.device)
        t = time.perf_counter()
        for x, y in self.batches():
            sgd_step(self.forward, self.opt, x, y)
            self.steps += 1
            if sync_every_step:
                sync(self.device)
        sync(self.device)
        return time.perf_counter() - t


class LoaderLoop(PlainLoop):
    """The same training loop fed by a torchvision DataLoader with per-example transforms."""

    def __init__(self, p: Parts, workers: int):
        super().__init__(p)
        from torch.utils.data import DataLoader, TensorDataset
        from torchvision.transforms import v2

        ds = p.data.spec
        steps = [v2.RandomCrop(ds.image_size, padding=ds.crop_padding)] if ds.crop_padding else []
        steps += [v2.RandomHorizontalFlip()] if ds.flip else []
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(ds.mean, ds.std)]
        data = TensorDataset(p.data.train.images, p.data.train.labels)
        self.loader = DataLoader(_Transformed(data, v2.Compose(steps), ds.cutout), batch_size=self.batch,
                                 shuffle=True, num_workers=workers, pin_memory=p.device.type == "cuda",
                                 persistent_workers=workers > 0, drop_last=False)

    def batches(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, data, transform, cutout: int):
        self.data, self.transform, self.cutout = data, transform, cutout

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        x = self.transform(x)
        if self.cutout:
            x = augment.cutout(x[None], self.cutout, None)[0]
        return x, y


# --- the per-chunk host sync ---------------------------------------------------------------------

def count_syncs(v: Variant) -> Optional[int]:
    """Host syncs in one (untimed) epoch of `v`, counted by CUDA's sync debug mode; None on CPU,
    where every operation is synchronous and a sync drains nothing."""
    if v.parts.device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            timed_epoch(v.parts, v.run, v.next_epoch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    v.next_epoch += 1
    counted = sum("synchroniz" in str(w.message) for w in caught)
    return counted or None          # none counted: the debug mode did not report (never the loop's truth)


def sync_share(syncs: Optional[int], plain: List[float], plain_synced: List[float], steps: int,
               epoch_s: float) -> Dict[str, float]:
    """The per-chunk sync's estimated share of an epoch: syncs/epoch x the price of one sync,
    priced as the plain loop's extra time per step when it drains the queue after every step."""
    if syncs is None or not plain_synced:
        return {}
    per_sync = max(0.0, statistics.median(plain_synced) - statistics.median(plain)) / max(steps, 1)
    return {"syncs_per_epoch": syncs, "sync_cost_us": per_sync * 1e6, "sync_share": syncs * per_sync / epoch_s}


# --- the benchmark -------------------------------------------------------------------------------

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


def run_bench(base: List[str], opts: Options, out_dir: Path, log=print) -> Dict[str, pd.DataFrame]:
    """Run the benchmark and write its files into `out_dir`; returns the main and scoring tables.
    The tables are rewritten after every round, so a run cut short keeps the rounds it finished."""
    t_start = time.perf_counter()
    load_before = _load()
    # every config up front: a bad override fails in seconds, not after the warm-up
    named = {name: base + QUIET + extra for name, extra, _ in VARIANTS}
    named.update({f"scoring {name}": base + QUIET + ["sampler=sb"] + [o.format(scale=opts.scale) for o in SCORING[name]]
                  for name in opts.scoring})
    if opts.proxy is not None:
        named["scoring proxy"] = base + QUIET + ["sampler=sb"] + [o.format(proxy=opts.proxy) for o in PROXY]
    configs = compose_configs(named)
    device = resolve_device(configs["traditional"].device)
    with tempfile.TemporaryDirectory(prefix="sbrun-bench-") as tmp:
        variants = build_variants(configs, device, Path(tmp))
        trad = variants["traditional"].parts
        info = describe(trad, opts.preset, base, load_before)
        log(f"device: {info['device_name']} | {trad.n} training examples | model {info['model']} | "
            f"data path {info['data_path']} | precision {info['precision']} | load {load_before}")
        log("warm-up: one priming epoch per variant (not timed)")
        warm_up(variants)

        x, y = scoring_batch(trad)
        scorers = build_scorers({name[len("scoring "):]: cfg for name, cfg in configs.items()
                                 if name.startswith("scoring ")}, trad, x, y, Path(tmp), log)
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
        # the reference loops hold the training set in memory: none for images read from disk
        in_memory = not isinstance(trad.data.train.images, LazyImages)
        plain, loader = (PlainLoop(trad), LoaderLoop(trad, opts.loader_workers)) if in_memory else (None, None)
        for ref in (plain, loader):
            if ref is not None:
                ref.epoch()
        refs: Dict[str, List[float]] = {"plain loop": [], "dataloader loop": [], "plain loop (sync/step)": []}
        tables = {}
        for r in range(opts.repeats):
            for v in variants.values():
                v.train()
            probe.sample()
            if in_memory:
                refs["plain loop"].append(plain.epoch())
                refs["dataloader loop"].append(loader.epoch())
            if syncs is not None and in_memory:
                refs["plain loop (sync/step)"].append(plain.epoch(sync_every_step=True))
            log(f"round {r + 1}/{opts.repeats}: " + ", ".join(
                [f"{n} {v.samples[-1]['epoch_s']:.2f}s" for n, v in variants.items()] +
                [f"{n} {t[-1]:.2f}s" for n, t in refs.items() if t]))
            info["load_after"] = _load()
            costs, info["cost_samples"] = probe.median(), len(probe.samples)
            write_costs(out_dir, costs, scorers, info)
            tables = {"bench": bench_table(variants, refs, costs, info, r + 1),
                      "scoring": scoring_frame(scorers, variants, costs)}
            sb2 = tables["bench"].set_index("variant").loc["sb beta=2", "epoch_s_median"]
            write_tables(out_dir, tables, info, sync_share(syncs, refs["plain loop"], refs["plain loop (sync/step)"],
                                                           plain.steps if in_memory else 0, sb2))
            if opts.time_limit_s is not None and time.perf_counter() - t_start > opts.time_limit_s \
                    and r + 1 < opts.repeats:
                log(f"time limit of {opts.time_limit_s:g} s reached: {r + 1} of {opts.repeats} rounds done")
                break
    return tables


def build_variants(configs: Dict[str, Config], device: torch.device, tmp: Path) -> Dict[str, Variant]:
    variants, data = {}, None
    for name, _, cycle in VARIANTS:
        p = build(configs[name], tmp / name.replace(" ", "_"), device, data=data)
        data = p.data            # every variant trains on the same loaded data
        variants[name] = Variant(name, p, RunState.new(p.n, device, p.cfg.optim.lr), cycle)
    return variants


def warm_up(variants: Dict[str, Variant]) -> None:
    """Compiled graphs (compile=true) and one untimed priming epoch per variant."""
    from .fit import warmup_compile

    for v in variants.values():
        warmup_compile(v.parts, v.run)        # a no-op without compile=true
        timed_epoch(v.parts, v.run, v.next_epoch)
        v.next_epoch += 1


def describe(p: Parts, preset: str, base: List[str], load_before: str) -> dict:
    """Where and on what the bench measured (costs.json, the table's footnote)."""
    return {"device": str(p.device), "device_name": p.environment["device_name"], "torch": torch.__version__,
            "cuda": torch.version.cuda, "preset": preset, "dataset": p.cfg.dataset.name, "model": p.cfg.model.name,
            "model_kwargs": dict(p.cfg.model.kwargs), "image_size": p.data.spec.image_size,
            "channels": p.data.spec.channels,
            "n_train": p.n, "batch_size": p.cfg.batch_size, "select_batch_size": p.cfg.select_size,
            "precision": p.effective["precision"], "channels_last": p.effective["channels_last"],
            "data_path": p.effective["data_path"], "compile": p.cfg.compile,
            "scoring": {"scale": p.cfg.scoring.scale, "precision": p.effective["scoring_precision"]},
            "load_before": load_before, "overrides": base}


def scoring_frame(scorers: Dict[str, Parts], variants: Dict[str, Variant], costs: Dict[str, float]) -> pd.DataFrame:
    """Each option's f_sel against fp32 at full scale, and the cost-model bound it allows for SB
    beta=2 and Stale-SB n=3 (at their measured backprop fractions). A proxy's row also pays its own
    training: a step on the selected fraction s of every train_every-th scored chunk adds
    s * proxy f+b / train_every per scored example. `macs_ratio`: its multiply-adds against the main
    model's, what `work` charges it without a measured costs_proxy.json."""
    if not scorers:
        return pd.DataFrame()
    fb = costs["fb"]
    fracs = {name: statistics.median(s["frac"] for s in variants[name].samples) if variants[name].samples
             else expected_fraction(2.0) for name in ("sb beta=2", "stale_sb n=3")}
    ref = costs.get("fp32", costs["f_sel"])

    def row(name: str, p: Parts) -> dict:
        def scoring(frac: float) -> float:       # per scored example, the proxy's training included
            return costs[name] + (0.0 if p.proxy is None else frac * costs[f"{name} proxy_fb"] / p.proxy.train_every)
        out = {"option": name, "scale": p.cfg.scoring.scale, "scoring_precision": p.effective["scoring_precision"],
               "f_sel_us": costs[name] * 1e6, "vs_fp32": costs[name] / ref, "fb_us": fb * 1e6,
               "bound_sb2": cost_model_speedup(scoring(fracs["sb beta=2"]), fb, fracs["sb beta=2"], 1),
               "bound_stale3": cost_model_speedup(scoring(fracs["stale_sb n=3"]), fb, fracs["stale_sb n=3"], 3)}
        if p.proxy is not None:
            out.update(proxy_fb_us=costs[f"{name} proxy_fb"] * 1e6, macs_ratio=p.proxy.cost)
        return out
    return pd.DataFrame([row(name, p) for name, p in scorers.items()])


def bench_table(variants: Dict[str, Variant], refs: Dict[str, List[float]], costs: Dict[str, float],
                info: dict, rounds: int) -> pd.DataFrame:
    trad_med = statistics.median(s["epoch_s"] for s in variants["traditional"].samples)
    n = variants["traditional"].parts.n
    rows = []
    for name, v in variants.items():
        times = [s["epoch_s"] for s in v.samples]
        med = statistics.median(times)
        frac = statistics.median(s["frac"] for s in v.samples)
        staleness = v.cycle if name.startswith("stale") else 1
        predicted = 1.0 if name == "traditional" else cost_model_speedup(costs["f_sel"], costs["fb"], frac, staleness)
        speedup = trad_med / med
        rows.append({"variant": name, "epoch_s_median": med, "epoch_s_min": min(times), "epoch_s_max": max(times),
                     "images_per_s": n / med, "speedup": speedup, "backprop_frac": frac,
                     "predicted_speedup": predicted, "efficiency": speedup / predicted,
                     "loaded_frac": statistics.median(s["loaded_frac"] for s in v.samples),
                     "bound_with_d": bound_with_data(costs, v.samples),
                     "bookkeeping_share": statistics.median(s["bookkeeping_s"] / s["epoch_s"] for s in v.samples),
                     "chunks_per_epoch": statistics.median(s["chunks"] for s in v.samples)})
    for name, times in refs.items():
        if times:
            med = statistics.median(times)
            rows.append({"variant": name, "epoch_s_median": med, "epoch_s_min": min(times),
                         "epoch_s_max": max(times), "images_per_s": n / med, "speedup": trad_med / med})
    df = pd.DataFrame(rows)
    df["f_sel_us"] = costs["f_sel"] * 1e6
    df["fb_us"] = costs["fb"] * 1e6
    df["d_us"] = costs["d"] * 1e6
    df["peak_memory"] = _peak_memory(variants["traditional"].parts.device)
    df["device"] = info["device_name"]
    df["repeats"] = rounds
    return df


def bound_with_data(costs: Dict[str, float], samples: List[dict]) -> float:
    """The cost-model speedup over Traditional with the data term: Traditional reads and trains
    every example, (d + f+b) each; a variant pays d per example it read, f_sel per one it scored
    and f+b per one it backpropagated (its measured fractions)."""
    d, f_sel, fb = costs["d"], costs["f_sel"], costs["fb"]
    med = {k: statistics.median(s[k] for s in samples) for k in ("loaded_frac", "scored_frac", "frac")}
    return (d + fb) / (med["loaded_frac"] * d + med["scored_frac"] * f_sel + med["frac"] * fb)


def write_costs(out_dir: Path, costs: Dict[str, float], scorers: Dict[str, Parts], info: dict) -> None:
    """costs.json (the configured scoring) and costs_<option>.json per scoring option: the per-example
    seconds `budget.costs` reads (f_sel, fb), and where they were measured."""
    keep = ("device", "device_name", "torch", "cuda", "preset", "dataset", "model", "model_kwargs", "image_size",
            "channels", "n_train", "batch_size",
            "select_batch_size", "precision", "channels_last", "data_path", "compile", "cost_samples")
    where = {k: info[k] for k in keep if k in info}
    files = {"costs.json": (costs["f_sel"], info["scoring"])}
    files.update({f"costs_{name}.json": (costs[name], {"scale": p.cfg.scoring.scale,
                                                       "precision": p.effective["scoring_precision"]})
                  for name, p in scorers.items() if p.proxy is None})   # a proxy: below
    for file, (select, scoring) in files.items():
        write_json(out_dir / file, {"f_sel": select, "fb": costs["fb"], "d": costs["d"],
                                    "unit": "seconds per example",
                                    "scoring": scoring, **where})
    for name, p in scorers.items():
        if p.proxy is not None:      # budget.costs=<it> charges the proxy its measured costs
            write_json(out_dir / f"costs_{name}.json", {
                "f_sel": costs["f_sel"], "fb": costs["fb"], "proxy_f_sel": costs[name],
                "proxy_fb": costs[f"{name} proxy_fb"], "unit": "seconds per example", "scoring": info["scoring"],
                "proxy": proxy_setup(p.cfg.scoring.proxy), **where})


def write_tables(out_dir: Path, tables: Dict[str, pd.DataFrame], info: dict, sync_info: Dict[str, float]) -> None:
    atomic_write(out_dir / "bench.csv", tables["bench"].to_csv(index=False).encode())
    if not tables["scoring"].empty:
        atomic_write(out_dir / "scoring.csv", tables["scoring"].to_csv(index=False).encode())
    atomic_write(out_dir / "bench.md", to_markdown(tables["bench"], tables["scoring"], info, sync_info).encode())


# --- tables --------------------------------------------------------------------------------------

def _md_table(df: pd.DataFrame, cols) -> List[str]:
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and v != v) else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(df: pd.DataFrame, scoring: Optional[pd.DataFrame] = None, info: Optional[dict] = None,
                sync_info: Optional[Dict[str, float]] = None) -> str:
    cols = [("variant", "variant", "{}"), ("epoch_s_median", "epoch s (median)", "{:.2f}"),
            ("epoch_s_min", "min", "{:.2f}"), ("epoch_s_max", "max", "{:.2f}"),
            ("backprop_frac", "backprop frac", "{:.3f}"), ("speedup", "speedup", "{:.2f}x"),
            ("predicted_speedup", "cost model", "{:.2f}x"), ("efficiency", "efficiency", "{:.2f}"),
            ("loaded_frac", "loaded frac", "{:.3f}"), ("bound_with_d", "bound with d", "{:.2f}x"),
            ("bookkeeping_share", "bookkeeping", "{:.1%}"), ("images_per_s", "images/s", "{:.0f}")]
    lines = _md_table(df, cols)
    first = df.iloc[0]
    info = info or {}
    lines += ["", f"Device: {first['device']}; f_sel = {first['f_sel_us']:.1f} us/example, "
                  f"f+b = {first['fb_us']:.1f} us/example, d = {first['d_us']:.1f} us/example read "
                  f"(medians of {info.get('cost_samples', 1)} timings, one per "
                  f"round and one before); peak memory {first['peak_memory']}; "
                  f"{int(first['repeats'])} interleaved rounds."]
    if info:
        lines.append(f"Setup: {info['dataset']} ({info['n_train']} examples), {info['model']}, batch "
                     f"{info['batch_size']}, precision {info['precision']}, channels_last {info['channels_last']}, "
                     f"data path {info['data_path']}, torch {info['torch']}"
                     + (f", CUDA {info['cuda']}" if info.get("cuda") else "")
                     + f"; load average before {info['load_before']}, after {info.get('load_after', '?')}.")
    lines += ["", *goals(df, sync_info or {}, str(info.get("device", "cpu")))]
    if scoring is not None and not scoring.empty:
        lines += ["", "Scoring options (f_sel per example; cost-model bound at the measured backprop fractions):", ""]
        lines += _md_table(scoring, [("option", "option", "{}"), ("scale", "scoring.scale", "{:g}"),
                                     ("scoring_precision", "scoring precision", "{}"),
                                     ("f_sel_us", "f_sel us/example", "{:.1f}"), ("vs_fp32", "vs fp32", "{:.2f}x"),
                                     ("bound_sb2", "SB beta=2 bound", "{:.2f}x"),
                                     ("bound_stale3", "Stale-SB n=3 bound", "{:.2f}x")]
                          + ([("proxy_fb_us", "proxy f+b us/example", "{:.1f}"),
                              ("macs_ratio", "multiply-add ratio", "{:.3f}x")] if "macs_ratio" in scoring else []))
    return "\n".join(lines) + "\n"


def goals(df: pd.DataFrame, sync_info: Dict[str, float], device: str) -> List[str]:
    """The performance targets (docs/performance.md), read off the table."""
    t = df.set_index("variant")
    trad = t.loc["traditional"]
    sel = t[t.index.str.startswith(("sb", "stale"))]
    out = [f"- SB / Stale-SB efficiency against the cost model (goal >= 0.9): "
           f"{sel['efficiency'].min():.2f}-{sel['efficiency'].max():.2f}",
           f"- selection bookkeeping share of the epoch (goal <= 2%): "
           f"{sel['bookkeeping_share'].min():.1%}-{sel['bookkeeping_share'].max():.1%}"]
    if "plain loop" in t.index:
        out.append(f"- Traditional epoch against the plain loop (goal <= 1.1x): "
                   f"{trad['epoch_s_median'] / t.loc['plain loop', 'epoch_s_median']:.2f}x")
    if "dataloader loop" in t.index:
        out.append(f"- Traditional images/s against the DataLoader pipeline (goal >= 2x on a GPU): "
                   f"{trad['images_per_s'] / t.loc['dataloader loop', 'images_per_s']:.2f}x")
    if sync_info:
        out.append(f"- per-chunk host sync: {sync_info['syncs_per_epoch']} syncs per SB beta=2 epoch x "
                   f"{sync_info['sync_cost_us']:.0f} us each (the plain loop's extra time per step when it syncs "
                   f"after every step) = {sync_info['sync_share']:.1%} of the epoch")
    elif device.startswith("cuda"):
        out.append("- per-chunk host sync: not measured (CUDA's sync debug mode reported no sync)")
    else:
        out.append("- per-chunk host sync: not measured (CPU: every operation is synchronous, a sync drains "
                   "no queue)")
    return out


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS)"


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# --- command line --------------------------------------------------------------------------------

def parse_scoring(text: str) -> Tuple[str, ...]:
    if text == "all":
        return tuple(SCORING)
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",")))
    bad = [n for n in names if n not in SCORING]
    if bad:
        raise argparse.ArgumentTypeError(f"{','.join(bad)} is invalid; allowed: all, none, or a comma list of "
                                          f"{', '.join(SCORING)}")
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="sbrun-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="extra sbrun overrides, e.g. device=cuda dataset.subset=20000")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="cpu: real MNIST (needs it under --data-dir: DIR/MNIST/raw) + small CNN; gpu: CIFAR-shaped "
                        "synthetic data + ResNet-18, bf16; smoke: a seconds-long check that the bench works, offline "
                        "(default: gpu with CUDA, else cpu)")
    p.add_argument("--data-dir", default=os.environ.get("SBRUN_DATA_DIR", "data"),
                   help="where datasets are read (sbrun's data_dir; the cpu preset needs MNIST there; default "
                        "$SBRUN_DATA_DIR, else ./data)")
    p.add_argument("--repeats", type=_positive(int), default=3, help="interleaved rounds (default 3)")
    p.add_argument("--cost-reps", type=_positive(int), default=20,
                   help="timed batches for f_sel and f+b (default 20)")
    p.add_argument("--loader-workers", type=_positive(int, zero=True), default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the loader-path rows (num_workers; default min(8, CPU cores))")
    p.add_argument("--scoring", type=parse_scoring, default=tuple(SCORING),
                   help=f"scoring options to measure: all (default), none, or a comma list of {', '.join(SCORING)}")
    p.add_argument("--scoring-scale", type=float, default=0.5, help="scoring.scale of the scale options (default 0.5)")
    p.add_argument("--proxy", type=float, default=None, metavar="F",
                   help="also measure a proxy scorer at scoring.proxy.width_factor=F (a scoring table row)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds after which no new round starts (the tables hold the rounds done)")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="folder for bench.csv, bench.md, scoring.csv and costs.json (default results/bench)")
    args = p.parse_args(argv)
    if not 0.0 < args.scoring_scale <= 1.0:
        p.error(f"--scoring-scale={args.scoring_scale} is invalid; allowed: a number in (0, 1]")
    if args.proxy is not None and not args.proxy > 0:
        p.error(f"--proxy={args.proxy} is invalid; allowed: a width factor > 0")
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    base = PRESETS[preset] + [f"data_dir={args.data_dir}"] + args.overrides
    opts = Options(repeats=args.repeats, cost_reps=args.cost_reps, loader_workers=args.loader_workers,
                   scoring=args.scoring, scale=args.scoring_scale, proxy=args.proxy, time_limit_s=args.time_limit,
                   preset=preset)
    try:
        tables = run_bench(base, opts, args.out)
    except (ConfigError, DataError) as err:
        print(f"sbrun-bench: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print()
    print((args.out / "bench.md").read_text())
    options = list(tables["scoring"]["option"]) if not tables["scoring"].empty else []
    written = ["bench.csv", "bench.md", "costs.json"] + (["scoring.csv"] if not tables["scoring"].empty else [])
    print(f"written in {args.out}: " + ", ".join(written + [f"costs_{o}.json" for o in options]))


def _positive(kind, zero: bool = False):
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text} is invalid; allowed: an integer >= {0 if zero else 1}")
        return value
    return parse


if __name__ == "__main__":
    main()

"""The cost probe: per-example seconds of a scoring forward (f_sel), a training step (f+b) and a
chunk read (d), timed on one fixed chunk. `budget.costs` reads them from a costs.json, and
sbrun-compare measures them here (`measure_costs`, `measure_proxy_costs`) without the epoch
benchmark, so this module imports none of the benchmark's other modules.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from .. import loop, proxy
from ..build import Parts, build, resolve_device
from ..config import Config, ConfigError
from ..messages import one_line
from ..proxy import proxy_setup

COST_EPOCH = 10_000       # the stream epoch whose first chunk the costs are timed on (never trained)


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


def compose_configs(named: Dict[str, List[str]]) -> Dict[str, Config]:
    """Validated configs (a bad override is one ConfigError line, as on sbrun's command line)."""
    from ..compose import composer, validate

    with composer() as compose:
        return {name: validate(compose(overrides)) for name, overrides in named.items()}


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
    """Seconds per example of a training step through loop.train_forward (compiled where compile=true)."""
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
        where = describe(p, "sbrun-compare", list(overrides), load_average())
    return {**costs, "unit": "seconds per example", "cost_reps": reps, **where}


def measure_proxy_costs(overrides: List[str], reps: int = 20) -> Dict[str, object]:
    """A proxy scorer's per-example costs (proxy_f_sel, proxy_fb) beside the main model's f_sel and
    fb timed in the same probe, for a costs.json `proxies` entry (budget.measured_proxy charges
    their ratios). `overrides` compose to a run with scoring.proxy set (e.g. sampler=sb_proxy)."""
    cfg = compose_configs({"probe": list(overrides)})["probe"]
    if not cfg.scoring.proxy.enabled:
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


def load_average() -> str:
    """The host's 1/5/15-minute load averages (recorded with the timings: a loaded host slows them)."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"

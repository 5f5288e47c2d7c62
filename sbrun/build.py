"""Config -> the parts of a run: data, stream, model, optimizer, sampler, device and precision.

The only place that maps configuration to objects: every `_target_` is instantiated here. A part
that cannot be built is one ConfigError or DataError line, raised before any training.
"""
from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from hydra.utils import instantiate

from . import records
from .budget import Meter, proxy_costs
from .components import injectable, resolve_target
from .config import Config, ConfigError, DatasetConfig, ModelConfig, OptimConfig
from .data import DataError, ImageSet, TrainTest, corrupt_labels
from .data.check import as_train_test, check_subsets, data_source, describe
from .data.noise import subset
from .data.split import hold_out
from .data.storage import LazyImages
from .data.stream import Augmenter, LoaderStream, TensorStream, fits_on_device
from .distributed import Collective
from .messages import one_line
from .proxy import Proxy, build_proxy, proxy_setup
from .samplers import Sampler, SamplerEnv
from .scaling import downsample
from .schedule import lr_drop_epochs
from .seeding import derive_seed, seed_globals
from .timing import PhaseTimer


@dataclass
class RunData:
    train: ImageSet            # training images and (possibly noisy) labels, on the CPU
    test: ImageSet
    true_labels: torch.Tensor
    noisy: torch.Tensor        # bool mask of corrupted labels, on the run's device
    classes: List[str]
    spec: DatasetConfig        # the dataset config with every null read from the data
    meta: Dict[str, Any]       # what was read from the data (recorded in summary.json)
    val: Optional[ImageSet] = None   # the validation split (dataset.val_fraction), clean labels, on the CPU


@dataclass
class Parts:
    cfg: Config
    run_dir: Path
    device: torch.device
    dist: Collective
    data: RunData
    stream: Any                # TensorStream | LoaderStream
    test_set: ImageSet         # on the device in the tensor path
    val_set: Optional[ImageSet]  # likewise; None without a validation split
    test_aug: Augmenter
    model: nn.Module           # the bare module: scoring, evaluation, checkpoints
    net: nn.Module             # what trains (DDP-wrapped under torchrun)
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    meter: Meter
    grid: Optional[Meter]      # eval.every as a Meter (total = one grid step); None: rows at epoch ends
    memory_format: torch.memory_format
    autocast: Any              # training and evaluation precision context
    score_autocast: Any        # the scoring forward's precision context
    local_batch: int           # this rank's share of a backprop batch
    chunk: int                 # this rank's selection-chunk size
    input_shape: tuple
    timer: PhaseTimer
    environment: Dict[str, Any]
    effective: Dict[str, Any]  # settings as they actually applied (recorded in summary.json)
    overrides: List[str] = field(default_factory=list)
    compiled: Dict[str, Any] = field(default_factory=dict)
    proxy: Optional[Proxy] = None   # scoring.proxy: runs every scoring forward in place of `model`
    prepared: Dict[str, float] = field(default_factory=dict)   # the sampler's first phase (summary.json)
    bar_disabled: Optional[bool] = None
    compile_warmup_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.data.train)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The torch device for `device=`; under torchrun, auto/cuda mean this rank's GPU (`local_rank`:
    its index among the GPUs this process sees, distributed.gpu_index)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r} is invalid: no CUDA GPU is visible; allowed here: auto, cpu")
        dev = torch.device(spec if spec != "cuda" else f"cuda:{local_rank}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec!r} is invalid: only {torch.cuda.device_count()} GPU(s); "
                              f"allowed: cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return dev
    return torch.device("cpu")


def build(cfg: Config, run_dir: Path, device: torch.device, dist: Optional[Collective] = None,
          overrides: List[str] = (), data: Optional[RunData] = None) -> Parts:
    """The run's parts. `data` replaces the configured dataset (a sampler's own sub-run, e.g.
    RHO-LOSS's irreducible-loss model on its holdout)."""
    dist = dist or Collective.single()
    seed_process(cfg, dist)
    data = data if data is not None else dist.in_turn(lambda: load_data(cfg, device))
    spec = data.spec
    model, proxy, memory_format = build_models(cfg, spec, device)

    use_tensor = data_on_device(cfg, data, device)
    shard = dist.shard(len(data.train))
    stream_cls = TensorStream if use_tensor else LoaderStream
    extra = {} if use_tensor else {"num_workers": cfg.num_workers}
    stream = stream_cls(data.train, spec, cfg.seed, device, shard, memory_format, **extra)
    test_set, val_set = (on_device(s, device) if use_tensor else s for s in (data.test, data.val))

    local_batch = dist.local_size(cfg.batch_size)
    meter = Meter.of(cfg.budget, cfg.epochs, len(data.train))
    charged_by = None
    if proxy is not None:      # its scoring forwards and its training are charged at its own cost
        costs, charged_by = proxy_costs(cfg.budget, meter.costs, proxy.cost, cfg.scoring.proxy.cost is not None,
                                        proxy_setup(cfg.scoring.proxy))
        meter = dataclasses.replace(meter, costs=costs)
    env = SamplerEnv(n_train=len(data.train), batch_size=local_batch, device=device, seed=cfg.seed,
                     epochs=cfg.epochs, lr_milestones=lr_drop_epochs(cfg.schedule, cfg.epochs), run_dir=run_dir)
    sampler = cfg.sampler.make(env)
    net = dist.wrap(model)
    bf16 = cfg.precision == "bf16"
    effective = {"precision": cfg.precision, "channels_last": memory_format == torch.channels_last,
                 "data_path": "tensor" if use_tensor else "loader", "device": str(device),
                 "scoring_precision": "bf16" if bf16 or cfg.scoring.precision == "bf16" else "fp32"}
    if proxy is not None:     # its multiply-add (or given) ratio, and what work charges per example
        effective.update(proxy_cost=proxy.cost, proxy_cost_select=meter.costs.proxy_select,
                         proxy_cost_train=meter.costs.proxy_train, proxy_cost_from=charged_by)
    parts = Parts(
        cfg=cfg, run_dir=Path(run_dir), device=device, dist=dist, data=data, stream=stream, test_set=test_set,
        val_set=val_set, test_aug=Augmenter(spec, device), model=model, net=net,
        optimizer=build_optimizer(model, cfg.optim), sampler=sampler, meter=meter, grid=eval_grid(cfg, meter),
        memory_format=memory_format, autocast=autocast(device, bf16),
        score_autocast=autocast(device, effective["scoring_precision"] == "bf16"), local_batch=local_batch,
        chunk=sampler.chunk_size(dist.local_size(cfg.select_size)),
        input_shape=(spec.channels, spec.image_size, spec.image_size), timer=PhaseTimer(device),
        environment=records.environment(device), effective=effective, overrides=list(overrides),
        proxy=proxy,
        bar_disabled=True if dist.rank != 0 or cfg.progress == "off" else (None if cfg.progress == "auto" else False))
    # With compile=true, full training batches and full selection chunks run compiled graphs of one
    # fixed shape each (built by the warm-up); odd-sized batches and evaluation run eagerly, so
    # nothing recompiles inside a timed epoch.
    if cfg.compile:
        parts.compiled = {"train": torch.compile(net), "select": torch.compile(scorer(parts))}
    return parts


def seed_process(cfg: Config, dist: Collective) -> None:
    """Seed the global RNGs and set determinism for this process."""
    # Rank 0 keeps the run seed, so a 1-process run is unchanged; DDP copies rank 0's weights.
    seed_globals(cfg.seed if dist.rank == 0 else derive_seed(cfg.seed, "rank", dist.rank))
    if cfg.deterministic:      # cuBLAS needs a fixed workspace for deterministic matmuls on CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: a process that runs several jobs (a local sweep) must not keep the last one's
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)


def build_models(cfg: Config, spec: DatasetConfig, device: torch.device):
    """(the model, the proxy scorer or None, the memory format both use), on `device`."""
    model = build_model(cfg, spec)
    proxy = build_proxy(cfg, spec, model, instantiate_model)
    if cfg.scoring.scale < 1 and cfg.sampler.scores:
        check_scaled_input(model if proxy is None else proxy.model, spec, cfg)
    model = model.to(device)
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    memory_format = torch.channels_last if conv and cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if proxy is not None:
        proxy.model.to(device=device, memory_format=memory_format)
    return model, proxy, memory_format


def scorer(p) -> nn.Module:
    """The network of every scoring forward: the proxy when there is one, else the main model."""
    return p.model if p.proxy is None else p.proxy.model


def eval_grid(cfg: Config, meter: Meter) -> Optional[Meter]:
    e = cfg.eval
    return None if e.every is None else Meter(e.unit, float(e.every), meter.n_train, meter.costs)


def data_on_device(cfg: Config, data: "RunData", device: torch.device) -> bool:
    """The tensor path (data on the device) where asked, or where `auto` finds it fits; images on
    disk (dataset.storage=memmap|files) always take the loader path."""
    on_disk = isinstance(data.train.images, LazyImages)
    if cfg.data_path == "tensor" and on_disk:
        raise ConfigError(f"data_path=tensor is invalid with dataset.storage={cfg.dataset.storage} (images read "
                          f"from disk); allowed: data_path=auto or loader, or dataset.storage=memory")
    return not on_disk and (cfg.data_path == "tensor" or (
        cfg.data_path == "auto" and fits_on_device(data.train, data.test, device=device)))


def on_device(s: Optional[ImageSet], device: torch.device) -> Optional[ImageSet]:
    return None if s is None else ImageSet(s.images.to(device), s.labels.to(device))


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA and on the CPU alike (so CI runs the same branch as a GPU)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def build_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """The paper's optimizer: SGD with (Nesterov) momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                           weight_decay=o.weight_decay)


# --- data --------------------------------------------------------------------------------------------

def load_data(cfg: Config, device: torch.device) -> RunData:
    """The dataset's train and test sets, subsets, validation split and label noise, with every
    null shape key of the dataset config read from the data. The split comes before the noise, so
    validation labels are clean."""
    ds = cfg.dataset
    raw = load_raw(ds, cfg.data_dir, cfg.seed)
    source = data_source(ds)
    meta = describe(raw, ds.num_classes, source)
    check_subsets(raw, ds, source)
    spec = resolved_spec(ds, meta, source)
    train, test = subset(raw.train, ds.subset), subset(raw.test, ds.test_subset)
    train, val = hold_out(train, ds.val_fraction, ds.val_seed)
    labels, noisy = corrupt_labels(train.labels, spec.num_classes, cfg.label_noise, cfg.seed, cfg.noise_mode)
    return RunData(ImageSet(train.images, labels), test, train.labels, noisy.to(device), list(meta["classes"]),
                   spec, {k: v for k, v in meta.items() if k != "classes"}, val)


def load_raw(ds: DatasetConfig, data_dir: str, seed: int) -> TrainTest:
    offered = {"root": str(Path(data_dir).expanduser()), "image_size": ds.image_size, "channels": ds.channels,
               "num_classes": ds.num_classes, "seed": seed, "storage": ds.storage}
    if ds.storage in ("memmap", "files") and "storage" not in injectable(resolve_target(ds.target, "dataset._target_"),
                                                                         offered):
        raise ConfigError(f"dataset.storage={ds.storage} is invalid for dataset={ds.name}: its loader holds the data "
                          f"in memory; allowed: auto or memory (memmap and files: dataset=folder or imagenet)")
    obj = instantiate_target(
        ds.target, "dataset._target_", ds.loader, offered, (DataError, ConfigError),
        lambda cause: DataError(f"dataset._target_={ds.target} failed: {type(cause).__name__}: "
                                f"{one_line(cause, lines=None, limit=200)}"))
    return as_train_test(obj, ds.target)


def instantiate_target(target: str, key: str, kwargs: Dict[str, Any], offered: Dict[str, Any],
                       own_errors: tuple, fail) -> Any:
    """`target(**kwargs)` plus those of `offered` its signature takes.
    Hydra wraps whatever the target raises: one of sbrun's `own_errors` (already one line) is
    re-raised as it is, anything else becomes `fail(cause)`."""
    fn = resolve_target(target, key)
    injected = injectable(fn, offered)
    try:
        return instantiate({"_target_": target, **kwargs}, **injected, _convert_="all")
    except own_errors:
        raise
    except Exception as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        if isinstance(cause, own_errors):
            raise cause from None
        raise fail(cause) from None


def resolved_spec(ds: DatasetConfig, meta: Dict[str, Any], source: str = "") -> DatasetConfig:
    """The dataset config with nulls filled from the data; given values must match the data
    (`source`, the file or folder, is what the messages name)."""
    source = source or ds.name
    given = {"channels": ds.channels, "image_size": ds.image_size}
    for key, value in given.items():
        if value is not None and value != meta[key]:
            raise DataError(f"{source}: the images have {key}={meta[key]}, but dataset.{key}={value}; allowed: "
                            f"dataset.{key}={meta[key]} or null (read from the data)")
    if ds.num_classes is not None and ds.num_classes < meta["num_classes"]:
        raise DataError(f"{source}: labels reach {meta['num_classes'] - 1}, but dataset.num_classes="
                        f"{ds.num_classes}; allowed: at least {meta['num_classes']}")
    spec = dataclasses.replace(
        ds, num_classes=ds.num_classes or meta["num_classes"], channels=meta["channels"],
        image_size=meta["image_size"], mean=list(ds.mean if ds.mean is not None else meta["mean"]),
        std=list(ds.std if ds.std is not None else meta["std"]))
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise DataError(f"{source}: dataset.mean/std have {len(spec.mean)}/{len(spec.std)} values for "
                        f"{spec.channels}-channel images; allowed: {spec.channels} values each, or null")
    if spec.cutout > spec.image_size:
        raise ConfigError(f"dataset.cutout={spec.cutout} is invalid; allowed: an integer in [0, {spec.image_size}]")
    return spec


# --- model ---------------------------------------------------------------------------------------

def build_model(cfg: Config, spec: DatasetConfig) -> nn.Module:
    return instantiate_model(cfg.model, spec)


def instantiate_model(m: ModelConfig, spec: DatasetConfig, key: str = "model") -> nn.Module:
    """Instantiate `m`'s `_target_` (the run's `key`: model, or scoring.proxy.model) with its keys
    plus num_classes, in_channels and image_size where its signature takes them, and check that it
    maps a batch to (N, num_classes) logits."""
    offered = {"num_classes": spec.num_classes, "in_channels": spec.channels, "image_size": spec.image_size}
    model = instantiate_target(
        m.target, f"{key}._target_", m.kwargs, offered, (ConfigError,),
        lambda cause: ConfigError(f"{key}._target_={m.target} rejected its arguments ({type(cause).__name__}: "
                                  f"{one_line(cause, lines=None, limit=160)}); allowed: the parameters its "
                                  f"signature takes"))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key}._target_={m.target} returned a {type(model).__name__}; allowed: a torch.nn.Module")
    check_output(model, spec, m.target, key=key)
    return model


def check_scaled_input(model: nn.Module, spec: DatasetConfig, cfg: Config) -> None:
    """scoring.scale < 1 feeds the scoring forward smaller images: the model must take them."""
    side = downsample(torch.zeros(1, spec.channels, spec.image_size, spec.image_size), cfg.scoring.scale).shape[-1]
    try:
        check_output(model, spec, cfg.model.target, side)
    except ConfigError:
        raise ConfigError(f"scoring.scale={cfg.scoring.scale:g} is invalid for model={cfg.model.name}: it cannot take "
                          f"the {side}x{side} scoring inputs; allowed: 1.0, or a model that takes any input size "
                          f"(e.g. convolutional with adaptive pooling)") from None


def check_output(model: nn.Module, spec: DatasetConfig, target: str, side: Optional[int] = None,
                 key: str = "model") -> None:
    """One forward of two blank images in eval mode (no state changes): logits must be (2, K)."""
    side = side or spec.image_size
    x = torch.zeros(2, spec.channels, side, side)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:
        raise ConfigError(f"{key}._target_={target} cannot take ({spec.channels}, {side}, {side}) images "
                          f"({type(err).__name__}: {one_line(err, lines=None, limit=160)}); "
                          f"allowed: a model for the dataset's image shape") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, spec.num_classes):
        raise ConfigError(f"{key}._target_={target} outputs {shape} for a batch of 2; allowed: logits of shape "
                          f"(N, num_classes) = (2, {spec.num_classes})")

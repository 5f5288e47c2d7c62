"""Typed, validated run configuration.

Hydra composes plain YAML from conf/; `validate()` is the one place that turns it into these
dataclasses. Type coercion happens in the OmegaConf merge with the schema, range checks in each
`__post_init__`. Every failure is a `ConfigError` whose message names the key and what is allowed,
so the CLI can print it as one line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A bad configuration value. The message is one line meant for the user."""


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


def _one_of(key: str, value: Any, options) -> None:
    _check(value in options, key, value, ", ".join(str(o) for o in options))


# Registries are filled by the modules that implement each name (datasets, models, samplers), so a
# new option is one registered class plus one YAML file. They are imported lazily by `validate`.
def _registry_names(kind: str) -> List[str]:
    if kind == "dataset":
        from .data.builtin import DATASETS as reg
    elif kind == "model":
        from .models import MODELS as reg
    else:
        from .samplers import SAMPLERS as reg
    return sorted(reg)


@dataclass
class DatasetConfig:
    name: str = "digits"
    num_classes: int = 10
    channels: int = 1
    image_size: int = 8
    mean: List[float] = field(default_factory=lambda: [0.5])
    std: List[float] = field(default_factory=lambda: [0.5])
    # Training augmentation, applied per batch (on the device in the tensor path).
    crop_padding: int = 0        # random crop to image_size after zero-padding this many pixels; 0 = off
    flip: bool = False           # random horizontal flip
    cutout: int = 0              # side of the zeroed square (DeVries & Taylor 2017); 0 = off
    extra: bool = False          # SVHN only: add the 531k "extra" images to the training set
    subset: Optional[int] = None       # use only the first `subset` training examples (after a seeded shuffle)
    test_subset: Optional[int] = None  # likewise for the test set
    # synthetic only
    n_train: int = 1024
    n_test: int = 256

    def __post_init__(self) -> None:
        _one_of("dataset", self.name, _registry_names("dataset"))
        _check(self.num_classes >= 2, "dataset.num_classes", self.num_classes, "an integer >= 2")
        _check(self.channels >= 1, "dataset.channels", self.channels, "an integer >= 1")
        _check(self.image_size >= 1, "dataset.image_size", self.image_size, "an integer >= 1")
        _check(len(self.mean) == self.channels, "dataset.mean", list(self.mean), f"{self.channels} values")
        _check(len(self.std) == self.channels and all(s > 0 for s in self.std),
               "dataset.std", list(self.std), f"{self.channels} positive values")
        _check(self.crop_padding >= 0, "dataset.crop_padding", self.crop_padding, "an integer >= 0")
        _check(0 <= self.cutout <= self.image_size, "dataset.cutout", self.cutout,
               f"an integer in [0, {self.image_size}]")
        for key in ("subset", "test_subset"):
            v = getattr(self, key)
            _check(v is None or v >= 1, f"dataset.{key}", v, "null or an integer >= 1")
        _check(self.n_train >= 2 and self.n_test >= 1, "dataset.n_train", self.n_train,
               "n_train >= 2 and n_test >= 1")


@dataclass
class ModelConfig:
    name: str = "cnn"
    width: int = 32            # cnn/mlp: channels or hidden units of the first layer
    depth: int = 28            # wrn: 6n+4; densenet: 6n+4 (bottleneck)
    widen_factor: int = 10     # wrn
    dropout: float = 0.0       # wrn/mlp/cnn dropout probability
    growth_rate: int = 12      # densenet

    def __post_init__(self) -> None:
        _one_of("model", self.name, _registry_names("model"))
        _check(self.width >= 1, "model.width", self.width, "an integer >= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a number in [0, 1)")
        if self.name == "wrn":
            _check(self.depth >= 10 and (self.depth - 4) % 6 == 0, "model.depth", self.depth,
                   "6n+4 with n >= 1 (e.g. 16, 28, 40) for wrn")
            _check(self.widen_factor >= 1, "model.widen_factor", self.widen_factor, "an integer >= 1")
        if self.name == "densenet":
            _check(self.depth >= 10 and (self.depth - 4) % 6 == 0, "model.depth", self.depth,
                   "6n+4 with n >= 1 (e.g. 40, 100) for densenet")
            _check(self.growth_rate >= 1, "model.growth_rate", self.growth_rate, "an integer >= 1")


@dataclass
class SamplerConfig:
    """Keys of every sampler; each sampler reads only its own (README, "Samplers")."""
    name: str = "sb"
    beta: float = 2.0            # sb/stale_sb selectivity; random/topk default fraction 1/(1+beta)
    history: int = 1024          # sb: length R of the loss-percentile window
    min_prob: float = 0.0        # sb: floor on the selection probability
    staleness: int = 1           # sb: selection forwards every `staleness` epochs (1 = plain SB)
    prime_epochs: int = 1        # epochs of full backprop before selection starts
    prob: Optional[float] = None  # random: keep probability (null = 1/(1+beta))
    keep: Optional[float] = None  # topk/composer: kept fraction (null = 1/(1+beta))
    pool_factor: int = 3         # kath18: presample pool B = pool_factor * batch_size
    reweight: bool = False       # sb/kath18: importance weights 1/(N p), normalised to mean 1
    variable_start: bool = True  # kath18: uniform until the variance-reduction estimate passes tau_th
    tau_th: Optional[float] = None  # kath18: threshold (null = (B + 3b) / (3b))
    vr_momentum: float = 0.9     # kath18: moving-average momentum of the estimate
    start: float = 0.5           # composer: fraction of training at which selection starts
    end: float = 0.9             # composer: ... and ends
    interrupt: int = 2           # composer: every `interrupt`-th batch is a plain step (0 = never)
    scale_factor: float = 1.0    # composer: downsample the selection forward's input by this factor

    def __post_init__(self) -> None:
        _one_of("sampler", self.name, _registry_names("sampler"))
        _check(self.beta > 0, "beta", self.beta, "a number > 0")
        _check(self.history >= 1, "sampler.history", self.history, "an integer >= 1")
        _check(0.0 <= self.min_prob <= 1.0, "sampler.min_prob", self.min_prob, "a number in [0, 1]")
        _check(self.staleness >= 1, "sampler.staleness", self.staleness, "an integer >= 1")
        _check(self.prime_epochs >= 0, "sampler.prime_epochs", self.prime_epochs, "an integer >= 0")
        _check(self.prob is None or 0.0 < self.prob <= 1.0, "sampler.prob", self.prob,
               "null or a number in (0, 1]")
        _check(self.keep is None or 0.0 < self.keep <= 1.0, "sampler.keep", self.keep,
               "null or a number in (0, 1]")
        _check(self.pool_factor >= 1, "sampler.pool_factor", self.pool_factor, "an integer >= 1")
        _check(self.tau_th is None or self.tau_th > 0, "sampler.tau_th", self.tau_th, "null or a number > 0")
        _check(0.0 <= self.vr_momentum < 1.0, "sampler.vr_momentum", self.vr_momentum, "a number in [0, 1)")
        _check(0.0 <= self.start < self.end <= 1.0, "sampler.start", self.start,
               "0 <= sampler.start < sampler.end <= 1")
        _check(self.interrupt >= 0, "sampler.interrupt", self.interrupt, "an integer >= 0")
        _check(0.0 < self.scale_factor <= 1.0, "sampler.scale_factor", self.scale_factor,
               "a number in (0, 1]")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        _one_of("optim", self.name, ["sgd"])
        _check(self.lr > 0, "optim.lr", self.lr, "a number > 0")
        _check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _check(not self.nesterov or self.momentum > 0, "optim.nesterov", self.nesterov,
               "false when optim.momentum is 0")


@dataclass
class ScheduleConfig:
    name: str = "multistep"
    milestones: List[float] = field(default_factory=list)  # positions (epochs) where lr *= gamma
    gamma: float = 0.1
    by: str = "epochs"   # epochs: epochs passed through selection; backprops: backprops / N

    def __post_init__(self) -> None:
        _one_of("schedule", self.name, ["multistep"])
        _one_of("schedule.by", self.by, ["epochs", "backprops"])
        _check(self.gamma > 0, "schedule.gamma", self.gamma, "a number > 0")
        ms = list(self.milestones)
        _check(all(m > 0 for m in ms) and ms == sorted(ms), "schedule.milestones", ms,
               "increasing positive numbers")


@dataclass
class CheckpointConfig:
    enabled: bool = True
    keep: int = 1   # how many end-of-epoch checkpoints to keep

    def __post_init__(self) -> None:
        _check(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    beta: float = 2.0
    seed: int = 0
    epochs: int = 30
    hours: Optional[float] = None          # training-time budget; the run stops after the epoch that crosses it
    batch_size: int = 128
    select_batch_size: Optional[int] = None  # examples per selection forward (null = batch_size)
    eval_batch_size: int = 1024
    label_noise: float = 0.0
    noise_mode: str = "uniform"            # uniform: new label drawn from the other classes; permute
    device: str = "auto"
    data_dir: str = "data"
    data_path: str = "auto"                # auto | tensor (device-resident) | loader (DataLoader workers)
    num_workers: int = 4                   # loader path only
    precision: str = "fp32"                # fp32 | bf16 (autocast, CUDA only)
    channels_last: bool = True             # CUDA + convolutional models only
    compile: bool = False                  # torch.compile the model
    deterministic: bool = False            # torch.use_deterministic_algorithms
    nan_check: bool = True                 # stop the run on a NaN/inf training loss
    plots: bool = True                     # per-run figures at the end of the run
    progress: str = "auto"                 # tqdm bar: auto (only on a terminal) | on | off
    loss_snapshots: int = 4                # per-example loss snapshots saved for the loss-CDF figure
    extremes: int = 32                     # most/least selected images saved for the figure
    out_dir: str = "results"
    name: Optional[str] = None             # stable run/sweep directory name (enables re-run = resume)
    resume: Optional[str] = None           # a run directory to continue

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.hours is None or self.hours > 0, "hours", self.hours, "null or a number > 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(self.select_batch_size is None or self.select_batch_size >= 1, "select_batch_size",
               self.select_batch_size, "null or an integer >= 1")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _check(0.0 <= self.label_noise < 1.0, "label_noise", self.label_noise, "a number in [0, 1)")
        _one_of("noise_mode", self.noise_mode, ["uniform", "permute"])
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
               self.device, "auto, cpu, cuda, cuda:N")
        _one_of("data_path", self.data_path, ["auto", "tensor", "loader"])
        _check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")
        _one_of("precision", self.precision, ["fp32", "bf16"])
        _one_of("progress", self.progress, ["auto", "on", "off"])
        _check(self.loss_snapshots >= 0, "loss_snapshots", self.loss_snapshots, "an integer >= 0")
        _check(self.extremes >= 0, "extremes", self.extremes, "an integer >= 0")
        if self.name is not None:
            _check(self.name != "" and "/" not in self.name and not self.name.startswith("."),
                   "name", self.name, "a non-empty directory name without '/'")

    @property
    def select_size(self) -> int:
        return self.select_batch_size or self.batch_size


def _type_error_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "config"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{key}: {first}"


def validate(cfg: DictConfig | dict) -> Config:
    """Merge a composed config onto the schema, check every range and return the typed Config.

    Hydra's own section (`hydra:`) is ignored. Raises ConfigError with a one-line message.
    """
    if isinstance(cfg, DictConfig):
        data = OmegaConf.to_container(cfg, resolve=True)
    else:
        data = dict(cfg)
    data.pop("hydra", None)
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, data)
        obj = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(_type_error_message(err)) from None
    assert isinstance(obj, Config)
    return obj


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


SCHEMA_NAME = "sbrun_schema"


def register_schema() -> None:
    """Make the dataclasses the base of conf/config.yaml: every key exists for every choice of a
    group, with one typed default, and Hydra rejects unknown keys at compose time."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


# What each key is. One table drives the resume check, the sweep job directory names (Hydra's
# override_dirname) and how the figures group runs into configurations:
#   identity     what the run computes: refused on resume, part of a job's directory name, part
#                of a configuration in tables and figures;
#   setting      how far the experiment runs (epochs, hours, budget.amount): a larger value extends
#                a run on resume; part of the directory name and of a configuration;
#   operational  where and how the run is carried out, never what it computes: free on resume,
#                left out of directory names and configurations.
IDENTITY, SETTING, OPERATIONAL = "identity", "setting", "operational"
KEY_KINDS: Dict[str, str] = {
    # identity
    "dataset": IDENTITY, "model": IDENTITY, "sampler": IDENTITY, "optim": IDENTITY, "schedule": IDENTITY,
    "experiment": IDENTITY, "debug": IDENTITY, "beta": IDENTITY, "seed": IDENTITY,
    "label_noise": IDENTITY, "noise_mode": IDENTITY, "batch_size": IDENTITY, "select_batch_size": IDENTITY,
    "precision": IDENTITY, "channels_last": IDENTITY, "compile": IDENTITY, "data_path": IDENTITY,
    "selection_forward": IDENTITY, "bn_recalibrate": IDENTITY, "scoring": IDENTITY, "budget": IDENTITY,
    # setting
    "epochs": SETTING, "hours": SETTING, "budget.amount": SETTING,
    # operational
    "device": OPERATIONAL, "data_dir": OPERATIONAL, "num_workers": OPERATIONAL, "progress": OPERATIONAL,
    "plots": OPERATIONAL, "out_dir": OPERATIONAL, "name": OPERATIONAL, "resume": OPERATIONAL,
    "checkpoint": OPERATIONAL, "logger": OPERATIONAL, "eval_batch_size": OPERATIONAL,
    "loss_snapshots": OPERATIONAL, "extremes": OPERATIONAL, "nan_check": OPERATIONAL,
    "deterministic": OPERATIONAL,
}


def key_kind(key: str) -> str:
    """identity, setting or operational for a dotted key (or a command-line override's key, with
    any +/~/++ prefix); the longest listed prefix decides, and unknown keys count as identity."""
    key = key.lstrip("+~")
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        kind = KEY_KINDS.get(".".join(parts[:n]))
        if kind is not None:
            return kind
    return IDENTITY


def keys_of_kind(kind: str) -> List[str]:
    return sorted(k for k, v in KEY_KINDS.items() if v == kind)


# Config keys that may differ between a run and its continuation (they do not change results).
RESUMABLE_KEYS = {"device", "data_dir", "progress", "plots", "num_workers", "resume", "epochs", "hours",
                  "out_dir", "name"}


def check_compatible(saved: Dict, current: Dict, what: str) -> None:
    """Raise ConfigError naming the keys where a saved run's config differs from this one."""
    diffs = _diff(saved, current)
    bad = [k for k in diffs if k.split(".")[0] not in RESUMABLE_KEYS]
    if bad:
        shown = ", ".join(f"{k}={_get(saved, k)!r} (now {_get(current, k)!r})" for k in bad[:3])
        raise ConfigError(f"the {what} was written for a different config: {shown}; allowed: the "
                          f"original settings, changing only {', '.join(sorted(RESUMABLE_KEYS))}")


def _diff(a, b, prefix="") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _get(d: Dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d

"""The run configuration's schema: typed dataclasses with their range checks.

Hydra composes plain YAML from conf/; `compose.validate()` turns it into these dataclasses (this
module imports no other sbrun module, so everything may import it). Run-level keys are typed here.
The three component groups carry a `_target_` and their schema sits beside their code
(sbrun/components.py turns them into specs):
- `model._target_`: a constructor; its signature is its schema;
- `dataset._target_`: a loader; its signature is its schema, plus the generic DatasetConfig keys;
- `sampler._target_`: a sampler's config dataclass (range checks in its `__post_init__`).

Range checks sit in each `__post_init__`; every failure is a `ConfigError` whose message names
the key and what is allowed, so the CLI can print it as one line.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


class ConfigError(ValueError):
    """A bad configuration value. The message is one line meant for the user."""


def check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


def one_of(key: str, value: Any, options) -> None:
    check(value in options, key, value, ", ".join(str(o) for o in options))


# What each key is. One table drives the resume check, the sweep job directory names (Hydra's
# override_dirname) and how the figures group runs into configurations:
#   identity     what the run computes: refused on resume, part of a job's directory name, part
#                of a configuration in tables and figures;
#   setting      how far the experiment runs (epochs, hours, budget.amount): a larger value extends
#                a run on resume; part of the directory name and of a configuration;
#   operational  where and how the run is carried out, never what it computes: free on resume,
#                left out of directory names and configurations.
IDENTITY, SETTING, OPERATIONAL = "identity", "setting", "operational"
STORAGES = ("auto", "memory", "memmap", "files")      # dataset.storage (sbrun/data/storage.py)
KEY_KINDS: Dict[str, str] = {
    # identity
    "dataset": IDENTITY, "model": IDENTITY, "sampler": IDENTITY, "optim": IDENTITY, "schedule": IDENTITY,
    "recipe": IDENTITY, "experiment": IDENTITY, "debug": IDENTITY, "beta": IDENTITY, "seed": IDENTITY,
    "label_noise": IDENTITY, "noise_mode": IDENTITY, "batch_size": IDENTITY, "select_batch_size": IDENTITY,
    "precision": IDENTITY, "channels_last": IDENTITY, "compile": IDENTITY, "data_path": IDENTITY,
    "selection_forward": IDENTITY, "bn_recalibrate": IDENTITY, "scoring": IDENTITY, "budget": IDENTITY,
    "eval": IDENTITY,   # where rows land, and bn_recalibrate's re-estimates feed the scoring forwards
    # setting
    "epochs": SETTING, "hours": SETTING, "budget.amount": SETTING,
    # operational
    "device": OPERATIONAL, "data_dir": OPERATIONAL, "num_workers": OPERATIONAL, "progress": OPERATIONAL,
    "plots": OPERATIONAL, "out_dir": OPERATIONAL, "name": OPERATIONAL, "resume": OPERATIONAL,
    "checkpoint": OPERATIONAL, "logger": OPERATIONAL, "callbacks": OPERATIONAL, "eval_batch_size": OPERATIONAL,
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


def doc(text: str, default: Any = None, factory: Any = None):
    """A schema field with its one-line description (`sbrun --help` lists them): the one copy of
    what each key means."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


def key_docs(schema=None, prefix: str = "") -> List[tuple]:
    """(dotted key, default, description) of every run-level key, nested settings included."""
    schema = schema or Config
    rows = []
    for f in dataclasses.fields(schema):
        text = f.metadata.get("doc", "")
        kind = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            rows += key_docs(kind, f"{prefix}{f.name}.")
        else:
            default = kind() if kind is not None else f.default
            rows.append((f"{prefix}{f.name}", default, text))
    return rows


# --- component specs (filled by sbrun/components.py from the `_target_` nodes) ------------------

@dataclass
class DatasetConfig:
    """The keys every dataset has. Null shape keys are read from the data (arrays, folders)."""
    name: str = "digits"
    num_classes: Optional[int] = None
    channels: Optional[int] = None
    image_size: Optional[int] = None
    mean: Optional[List[float]] = None       # per channel, [0, 1] units
    std: Optional[List[float]] = None
    # Training augmentation, applied per batch (on the device in the tensor path).
    crop_padding: int = 0        # random crop to image_size after zero-padding this many pixels; 0 = off
    flip: bool = False           # random horizontal flip
    cutout: int = 0              # side of the zeroed square (DeVries & Taylor 2017); 0 = off
    subset: Optional[int] = None       # use only the first `subset` training examples (after a seeded shuffle)
    test_subset: Optional[int] = None  # likewise for the test set
    # Validation split, held out of the training set after `subset` and before label noise (clean
    # labels); seeded by val_seed alone, so every method and run seed shares it. 0 = no split.
    val_fraction: float = 0.0
    val_seed: int = 0
    # Where training images live (sbrun/data/storage.py): memory, memmap (a .npy on disk), files
    # (decoded per read), or auto (memory when the decoded data fits a quarter of RAM). Loaders
    # that take a `storage` argument honour it (dataset=folder, imagenet); the others are in memory.
    storage: str = "auto"
    # The loader: `_target_` plus its own keys (path, extra, n_train, ...).
    target: str = "sbrun.data.builtin.digits"
    loader: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("num_classes", "channels", "image_size"):
            v = getattr(self, key)
            low = 2 if key == "num_classes" else 1
            check(v is None or v >= low, f"dataset.{key}", v, f"null (from the data) or an integer >= {low}")
        if self.mean is not None and self.channels is not None:
            check(len(self.mean) == self.channels, "dataset.mean", list(self.mean), f"{self.channels} values")
        if self.std is not None:
            check(all(s > 0 for s in self.std) and (self.channels is None or len(self.std) == self.channels),
                  "dataset.std", list(self.std), "one positive value per channel")
        check(self.crop_padding >= 0, "dataset.crop_padding", self.crop_padding, "an integer >= 0")
        check(self.cutout >= 0 and (self.image_size is None or self.cutout <= self.image_size),
              "dataset.cutout", self.cutout, f"an integer in [0, {self.image_size or 'image_size'}]")
        for key in ("subset", "test_subset"):
            v = getattr(self, key)
            check(v is None or v >= 1, f"dataset.{key}", v, "null or an integer >= 1")
        check(0.0 <= self.val_fraction < 0.5, "dataset.val_fraction", self.val_fraction,
              "a number in [0, 0.5) (0 = no validation split)")
        check(self.val_seed >= 0, "dataset.val_seed", self.val_seed, "an integer >= 0")
        check(self.storage in STORAGES, "dataset.storage", self.storage, " | ".join(STORAGES))

    def node(self) -> Dict[str, Any]:
        """Back to the composed YAML layout (what summary.json and checkpoints record)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("target", "loader")}
        return {"_target_": self.target, **out, **self.loader}


@dataclass
class ModelConfig:
    name: str = "cnn"
    target: str = "sbrun.models.cnn"
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def node(self) -> Dict[str, Any]:
        return {"_target_": self.target, "name": self.name, **self.kwargs}


@dataclass
class OptimConfig:
    name: str = doc("optimizer: sgd (the paper's)", "sgd")
    lr: float = doc("learning rate (the paper's 0.1; the small CPU recipes set 0.02)", 0.1)
    momentum: float = doc("SGD momentum, in [0, 1)", 0.9)
    nesterov: bool = doc("Nesterov momentum", True)
    weight_decay: float = doc("L2 weight decay", 5e-4)
    batch_ref: Optional[int] = doc("linear scaling rule: lr is optim.lr x global batch_size / batch_ref "
                                   "(null: optim.lr as given; ImageNet recipes: 256)", None)

    def __post_init__(self) -> None:
        one_of("optim", self.name, ["sgd"])
        check(self.batch_ref is None or self.batch_ref >= 1, "optim.batch_ref", self.batch_ref,
              "null or an integer >= 1")
        check(self.lr > 0, "optim.lr", self.lr, "a number > 0")
        check(0.0 <= self.momentum < 1.0, "optim.momentum", self.momentum, "a number in [0, 1)")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        check(not self.nesterov or self.momentum > 0, "optim.nesterov", self.nesterov,
              "false when optim.momentum is 0")


SCHEDULES = ["multistep", "step", "linear", "cosine"]


@dataclass
class ScheduleConfig:
    """multistep: lr *= gamma at absolute positions (epochs, or backprops/N with by=backprops), the
    paper's schedules. step/linear/cosine: relative to the run's length (budget.amount, else epochs),
    reaching final_lr_frac * lr exactly when the run ends; step's milestones are fractions."""
    name: str = doc("multistep | step | linear | cosine", "multistep")
    milestones: List[float] = doc("multistep: epochs (or backprops/N) of each lr cut; step: run fractions",
                                  factory=list)
    gamma: Optional[float] = doc("lr factor at each milestone (step: null = final_lr_frac ** (1 / #milestones))", 0.1)
    by: str = doc("multistep: epochs passed through selection | backprops / N", "epochs")
    final_lr_frac: float = doc("step / linear / cosine: the final lr as a fraction of optim.lr", 0.0)
    warmup: float = doc("linear warm-up from 0 over this fraction of the run (ImageNet's 5 of 90 epochs: 0.056)",
                        0.0)

    def __post_init__(self) -> None:
        one_of("schedule", self.name, SCHEDULES)
        one_of("schedule.by", self.by, ["epochs", "backprops"])
        check(self.gamma is None or self.gamma > 0, "schedule.gamma", self.gamma, "null or a number > 0")
        check(0.0 <= self.final_lr_frac <= 1.0, "schedule.final_lr_frac", self.final_lr_frac, "a number in [0, 1]")
        check(0.0 <= self.warmup < 1.0, "schedule.warmup", self.warmup, "a fraction of the run in [0, 1)")
        ms = list(self.milestones)
        check(all(m > 0 for m in ms) and ms == sorted(ms), "schedule.milestones", ms, "increasing positive numbers")
        if self.name == "step":
            check(len(ms) > 0 and ms[-1] < 1, "schedule.milestones", ms,
                  "increasing fractions of the run in (0, 1) for schedule=step")
            check(self.gamma is not None or self.final_lr_frac > 0, "schedule.final_lr_frac", self.final_lr_frac,
                  "a number in (0, 1] when schedule.gamma is null")
        if self.name == "multistep":
            check(self.gamma is not None, "schedule.gamma", self.gamma, "a number > 0 for schedule=multistep")


BUDGET_UNITS = ["epochs", "backprops", "seconds", "work"]
# Paper's cost ratio: a backward pass costs about twice a forward, so a training forward+backward
# costs 3 selection forwards (Jiang et al. 2019, Sec. 3).
PAPER_COST_SELECT, PAPER_COST_TRAIN = 1.0, 3.0


@dataclass
class BudgetConfig:
    """How much compute a run may spend. amount is in epoch-equivalents for epochs, backprops
    (N backprops = 1) and work (N * cost_train = 1, one Traditional epoch), seconds for seconds."""
    unit: str = doc("epochs | backprops | seconds | work (machine-independent compute)", "epochs")
    amount: Optional[float] = doc("run length in budget.unit (null: the run lasts `epochs` epochs)", None)
    cost_select: Optional[float] = doc("null: from `costs` if given, else the paper's 1", None)
    cost_train: Optional[float] = doc("null: from `costs` if given, else the paper's 3", None)
    costs: Optional[str] = doc("a costs.json written by sbrun-bench (f_sel and f+b)", None)
    cost_data: Optional[float] = doc("work units of reading one example from storage (load, decode, augment): "
                                     "null: not charged, unless charge_data takes d from `costs`", None)
    charge_data: bool = doc("charge every example read (examples_loaded) at the costs.json's d", False)

    def __post_init__(self) -> None:
        one_of("budget.unit", self.unit, BUDGET_UNITS)
        check(self.amount is None or self.amount > 0, "budget.amount", self.amount, "null or a number > 0")
        for key in ("cost_select", "cost_train"):
            v = getattr(self, key)
            check(v is None or v >= 0, f"budget.{key}", v, "null or a number >= 0")
        check(self.cost_train is None or self.cost_train > 0, "budget.cost_train", self.cost_train,
              "null or a number > 0")
        check(self.cost_data is None or self.cost_data >= 0, "budget.cost_data", self.cost_data,
              "null or a number >= 0")
        check(not self.charge_data or self.costs or self.cost_data is not None, "budget.charge_data",
              self.charge_data, "true only with budget.costs (a costs.json with d) or budget.cost_data")


EVAL_UNITS = ["work", "backprops", "epochs"]


@dataclass
class EvalConfig:
    """When a run evaluates. every=null: at every epoch end (and at a budget's end). every=X: each
    time the run's usage in `unit` crosses the next multiple of X (checked after every step, on host
    counters), and at the run's end; epoch ends then add no rows, so every method is evaluated at
    the same compute points. Units as in BudgetConfig (work and backprops in Traditional epochs)."""
    every: Optional[float] = doc("evaluate each time usage in eval.unit crosses a multiple of this "
                                 "(null: every epoch end)", None)
    unit: str = doc("work | backprops | epochs: the unit of eval.every", "work")

    def __post_init__(self) -> None:
        check(self.every is None or self.every > 0, "eval.every", self.every,
              "null (evaluate at every epoch end) or a number > 0")
        one_of("eval.unit", self.unit, EVAL_UNITS)


@dataclass
class ProxyConfig:
    """A smaller network that runs every scoring forward in place of the main model and trains
    online on the examples selected (airbench96_faster's proxy; README, Proxy scoring). Off unless
    width_factor or model._target_ is given. Its optimizer is SGD with the main run's settings and
    learning-rate schedule unless lr/momentum/weight_decay are set (the reference's proxy uses the
    main net's optimizer hyperparameters and schedule)."""
    width_factor: Optional[float] = doc("the main model rebuilt at this times its `width` (null: no proxy)", None)
    model: Dict[str, Any] = doc("any model as the proxy: scoring.proxy.model._target_=pkg.Net, its keys with "
                                "+scoring.proxy.model.KEY=V", factory=lambda: {"_target_": None})
    train_every: int = doc("the proxy trains on every k-th scored chunk (the reference: 4)", 4)
    lr: Optional[float] = doc("the proxy's base lr, scaled by the run's schedule (null: optim.lr)", None)
    momentum: Optional[float] = doc("the proxy's SGD momentum (null: optim.momentum)", None)
    weight_decay: Optional[float] = doc("the proxy's weight decay (null: optim.weight_decay)", None)
    cost: Optional[float] = doc("its per-example cost relative to the main model, charged in work (null: "
                                "budget.costs' measured proxy costs, else their ratio of multiply-adds)", None)

    def __post_init__(self) -> None:
        check(self.width_factor is None or self.width_factor > 0, "scoring.proxy.width_factor", self.width_factor,
              "null (no proxy) or a number > 0")
        target = self.model.get("_target_")
        check(self.width_factor is None or target is None, "scoring.proxy.model._target_", target,
              "null when scoring.proxy.width_factor is set (one proxy: a width factor or a model)")
        check(target is not None or set(self.model) <= {"_target_"}, "scoring.proxy.model._target_", target,
              "a model's dotted path when scoring.proxy.model has keys, e.g. scoring.proxy.model._target_=pkg.Net")
        check(self.train_every >= 1, "scoring.proxy.train_every", self.train_every, "an integer >= 1")
        check(self.lr is None or self.lr > 0, "scoring.proxy.lr", self.lr, "null or a number > 0")
        check(self.momentum is None or 0.0 <= self.momentum < 1.0, "scoring.proxy.momentum", self.momentum,
              "null or a number in [0, 1)")
        check(self.weight_decay is None or self.weight_decay >= 0, "scoring.proxy.weight_decay",
              self.weight_decay, "null or a number >= 0")
        check(self.cost is None or self.cost > 0, "scoring.proxy.cost", self.cost, "null or a number > 0")

    @property
    def enabled(self) -> bool:
        return self.width_factor is not None or self.model.get("_target_") is not None


@dataclass
class ScoringConfig:
    """The scoring (selection) forward of loss-based samplers; cheaper scoring lowers their cost."""
    scale: float = doc("downsample the scoring input by this factor (Composer's scale_factor)", 1.0)
    precision: str = doc("fp32 | bf16 (autocast on CPU and CUDA)", "fp32")
    proxy: ProxyConfig = doc("a proxy network that scores in place of the main model", factory=ProxyConfig)

    def __post_init__(self) -> None:
        check(0.0 < self.scale <= 1.0, "scoring.scale", self.scale, "a number in (0, 1]")
        one_of("scoring.precision", self.precision, ["fp32", "bf16"])


@dataclass
class CheckpointConfig:
    enabled: bool = doc("write end-of-epoch and stop checkpoints (resume= needs them)", True)
    keep: int = doc("how many end-of-epoch checkpoints to keep", 1)

    def __post_init__(self) -> None:
        check(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


@dataclass
class Config:
    # Components: plain nodes at compose time, specs after `validate`.
    dataset: Any = doc("dataset group: dataset=OPTION (keys: sbrun dataset=OPTION --cfg job)", None)
    model: Any = doc("model group: model=OPTION, or model._target_=pkg.Net for your own", None)
    sampler: Any = doc("sampler group: sampler=OPTION (which examples are backpropagated)", None)
    logger: Any = doc("experiment trackers: logger=csv | tensorboard | wandb | mlflow, or a list", None)
    callbacks: Any = doc("objects on the run's hooks: +callbacks.NAME._target_=pkg.Class (not recorded)", None)
    optim: OptimConfig = doc("optimizer settings (optim.lr, optim.momentum, ...)", factory=OptimConfig)
    schedule: ScheduleConfig = doc("learning-rate schedule: schedule=OPTION, schedule.* keys",
                                   factory=ScheduleConfig)
    budget: BudgetConfig = doc("compute budget: budget.unit and budget.amount", factory=BudgetConfig)
    scoring: ScoringConfig = doc("the scoring forward of loss-based samplers", factory=ScoringConfig)
    eval: EvalConfig = doc("when to evaluate: eval.every, eval.unit (null: every epoch end)", factory=EvalConfig)
    checkpoint: CheckpointConfig = doc("checkpointing", factory=CheckpointConfig)
    beta: Optional[float] = doc("SB selectivity: backprop fraction 1/(1+beta), for samplers that read it", 2.0)
    seed: int = doc("random seed of the run (model init, selection draws, label noise)", 0)
    epochs: int = doc("epochs to train (unless budget.amount is set)", 30)
    hours: Optional[float] = doc("safety cap on training time in hours (evaluation excluded)", None)
    batch_size: int = doc("backprop batch size", 128)
    select_batch_size: Optional[int] = doc("examples per selection forward (null = batch_size)", None)
    eval_batch_size: int = doc("batch size of the test-set evaluation", 1024)
    label_noise: float = doc("fraction of training labels corrupted, in [0, 1)", 0.0)
    noise_mode: str = doc("uniform (a new label from the other classes) | permute (shuffle chosen labels)", "uniform")
    selection_forward: str = doc("eval (the SB authors) | train (Composer, RHO-LOSS): BN statistics update", "eval")
    bn_recalibrate: int = doc("re-estimate BN statistics on this many training examples before each evaluation", 0)
    device: str = doc("auto | cpu | cuda | cuda:N", "auto")
    data_dir: str = doc("where datasets are downloaded and read ($SBRUN_DATA_DIR)", "data")
    data_path: str = doc("auto | tensor (device-resident) | loader (DataLoader workers)", "auto")
    num_workers: int = doc("DataLoader worker processes (data_path=loader only)", 4)
    precision: str = doc("fp32 | bf16 (autocast, CPU and CUDA)", "fp32")
    channels_last: bool = doc("channels_last memory format for convolutional models", True)
    compile: bool = doc("torch.compile the model", False)
    deterministic: bool = doc("torch.use_deterministic_algorithms (warn_only)", False)
    nan_check: bool = doc("stop the run on a NaN/inf training loss", True)
    plots: bool = doc("per-run figures at the end of the run", True)
    progress: str = doc("tqdm bar: auto (only on a terminal) | on | off", "auto")
    loss_snapshots: int = doc("per-example loss snapshots saved for the loss-CDF figure", 4)
    extremes: int = doc("most/least selected images saved for the figure", 32)
    out_dir: str = doc("results folder: OUT/runs/<name> and OUT/multirun/<name>", "results")
    name: Optional[str] = doc("stable run/sweep directory name (enables re-run = resume)", None)
    resume: Optional[str] = doc("a run directory to continue", None)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(self.hours is None or self.hours > 0, "hours", self.hours, "null or a number > 0")
        check(self.beta is None or self.beta > 0, "beta", self.beta, "a number > 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.select_batch_size is None or self.select_batch_size >= 1, "select_batch_size",
              self.select_batch_size, "null or an integer >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        check(0.0 <= self.label_noise < 1.0, "label_noise", self.label_noise, "a number in [0, 1)")
        one_of("noise_mode", self.noise_mode, ["uniform", "permute"])
        one_of("selection_forward", self.selection_forward, ["eval", "train"])
        check(self.bn_recalibrate >= 0, "bn_recalibrate", self.bn_recalibrate, "an integer >= 0 (0 = off)")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
              self.device, "auto, cpu, cuda, cuda:N")
        one_of("data_path", self.data_path, ["auto", "tensor", "loader"])
        check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")
        one_of("precision", self.precision, ["fp32", "bf16"])
        one_of("progress", self.progress, ["auto", "on", "off"])
        check(self.loss_snapshots >= 0, "loss_snapshots", self.loss_snapshots, "an integer >= 0")
        check(self.extremes >= 0, "extremes", self.extremes, "an integer >= 0")
        if self.name is not None:
            check(self.name != "" and "/" not in self.name and not self.name.startswith("."),
                  "name", self.name, "a non-empty directory name without '/'")

    @property
    def select_size(self) -> int:
        return self.select_batch_size or self.batch_size

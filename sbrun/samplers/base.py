"""The contract between the training loop and a sampler.

A sampler is configured by a dataclass (its `_target_`; range checks in `__post_init__`) whose
`make(env)` builds it. Per epoch the loop asks which examples to pass through at all (`visit`);
then, for each selection batch ("chunk") of training indices, what the sampler needs (`need`):
nothing, the examples' cached losses, or fresh losses from a scoring forward. It hands those losses
to `select`, which answers which positions of the chunk to backpropagate (with optional loss
weights), and reports every training forward back through `observe`. The loop queues the chosen
examples into backprop batches and never looks at which sampler it is running.

Samplers call no collectives: under DDP the loop gathers what a sampler asks for (all ranks'
chunk losses in `ctx.window` with `global_losses`, all ranks' observations in `observe` with
`global_observations`), so every rank's sampler sees the same global picture.
Every method but `need` and `select` has a default, so a new sampler overrides only what it uses.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

import torch

from ..config import check

EPOCH_ENDS = ("carry", "flush")


class Need(enum.Enum):
    NONE = "none"        # decide without losses
    CACHED = "cached"    # each example's most recent known loss
    FRESH = "fresh"      # a scoring forward on this chunk
    CHARGED = "charged"  # decide without losses, but count a scoring forward as if one ran (a cost-matched control)


@dataclass
class Ctx:
    epoch: int
    batch: int                       # the chunk's index within the epoch (also read as `chunk_index`)
    progress: float                  # fraction of the run (epochs or budget) done when the chunk starts
    generator: torch.Generator       # this rank's selection stream
    idx: torch.Tensor                # the chunk's training-set indices (this rank's share)
    window: Optional[torch.Tensor] = None   # every rank's losses of this chunk (global_losses samplers)

    @property
    def chunk_index(self) -> int:
        """The chunk's index within the epoch: `batch` by its plain name (`batch` stays the field,
        since samplers read it and build a Ctx with it)."""
        return self.batch


@dataclass
class Selection:
    pos: Optional[torch.Tensor]             # positions into the chunk; None = every example
    weight: Optional[torch.Tensor] = None   # per-selected-example loss weight; None = plain mean

    @staticmethod
    def everything() -> "Selection":
        return Selection(None)


@dataclass
class Observation:
    """One forward over training examples: their losses and, for samplers that ask
    (`wants_predictions`), the softmax confidence and correctness of the prediction."""
    idx: torch.Tensor
    losses: torch.Tensor
    confidence: Optional[torch.Tensor] = None
    correct: Optional[torch.Tensor] = None
    trained: bool = True        # False for a forward-only pass (Sampler.rescore)


@dataclass
class SamplerEnv:
    """What a sampler may know about the run it serves."""
    n_train: int                  # training-set size (all ranks)
    batch_size: int               # this rank's share of a backprop batch
    device: torch.device
    seed: int = 0
    epochs: int = 1               # the run's epochs (its length when no budget is set)
    lr_milestones: List[float] = dataclasses.field(default_factory=list)   # epochs where the lr drops
    run_dir: Optional[Path] = None


@dataclass
class SubRun:
    """A nested training run a sampler asks for (`Sampler.sub_run`). The runner builds it in
    `run_dir` on `data`, trains it (resuming from its own checkpoints there, so a stop during it
    resumes it), then fills in `parts` (its trained build.Parts) and `summary` (its final
    summary.json) and hands it to `Sampler.prepare`. Samplers describe the run; they never train it."""
    cfg: Any                          # its config.Config
    run_dir: Path
    data: Any = None                  # what it trains on (build.Data); None = what its config loads
    what: str = "the nested run"      # how the log and a stop message name it
    parts: Any = None
    summary: Optional[Dict[str, Any]] = None


@dataclass
class SamplerConfig:
    """Keys every sampler has. Subclasses add theirs and override `make` and `describe`."""
    name: str = "traditional"
    prime_epochs: int = 0        # epochs of full backprop before selection starts
    # What chosen examples left in the queue at an epoch's end do. carry: they wait for the next
    # epoch, so every SGD step is a full batch (what is left when the run ends is never stepped
    # nor counted). flush: one smaller step on them, as the SB authors' get_batch(final=True)
    # does (a full-lr step on a handful of examples; see docs/samplers-and-fidelity.md).
    epoch_end: str = "carry"

    # Whether the sampler runs scoring forwards (so selection_forward and scoring.* apply to it).
    scores: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check(self.prime_epochs >= 0, "sampler.prime_epochs", self.prime_epochs, "an integer >= 0")
        check(self.epoch_end in EPOCH_ENDS, "sampler.epoch_end", self.epoch_end, ", ".join(EPOCH_ENDS))

    def make(self, env: SamplerEnv) -> "Sampler":
        return Sampler(self, env)

    def describe(self) -> Dict[str, Optional[float]]:
        """The knobs that identify this configuration in tables and legends, with the expected
        backprop fraction ("selectivity"). None where a knob does not apply."""
        return {"beta": None, "staleness": None, "selectivity": 1.0}

    def node(self) -> dict:
        """Back to the composed YAML layout (what summary.json and checkpoints record)."""
        cls = type(self)
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **dataclasses.asdict(self)}


class Sampler:
    """Default behaviour: Traditional training (backprop everything, never look at losses)."""

    global_losses = False        # needs every rank's chunk losses (ctx.window) under DDP
    global_observations = False  # needs every rank's observations in `observe` under DDP
    wants_predictions = False    # needs confidence/correctness in `observe`
    steps_per_chunk: Optional[int] = None   # most SGD steps one chunk may take; None = every full batch waiting

    def __init__(self, cfg: SamplerConfig, env: SamplerEnv):
        self.cfg = cfg
        self.env = env
        self.device = env.device

    @property
    def carries_queue(self) -> bool:
        """Chosen examples left at an epoch's end wait for the next (no partial step)."""
        return self.cfg.epoch_end == "carry"

    def chunk_size(self, select_size: int) -> int:
        return select_size

    def epoch_chunk(self, epoch: int, chunk: int) -> int:
        """The chunk size of `epoch`, given the run's (`chunk_size`); a pure function of the epoch."""
        return chunk

    def priming(self, ctx: Ctx) -> bool:
        return ctx.epoch < self.cfg.prime_epochs

    def sub_run(self, parts) -> Optional["SubRun"]:
        """Once before training, on every start (new or resumed), before `prepare`: a nested run
        the runner is to train first (RHO-LOSS's irreducible-loss model), or None. `parts` is the
        run's build.Parts. A sampler that caches the nested run's result returns None once the
        cache is there, so that a restart finds the phase done."""
        return None

    def prepare(self, parts, sub: Optional["SubRun"] = None) -> Dict[str, float]:
        """Once before training, on every start: work a sampler needs done first, with `sub`, the
        trained nested run `sub_run` asked for (passed only when there was one). Returns the
        phase's cost, {"extra_work": work units (Traditional-epoch equivalents), "extra_time_s":
        seconds}, which count toward the run's budget and appear in summary.json, plus any other
        numbers worth recording there."""
        return {}

    def visit(self, epoch: int, progress: float, generator: torch.Generator) -> Optional[torch.Tensor]:
        """A bool mask over the training set: the examples this epoch passes through at all
        (pruning, a holdout); None = every example. Called once at the start of each epoch, with
        the fraction of the run (epochs or budget) done."""
        return None

    def need(self, ctx: Ctx) -> Need:
        return Need.NONE

    def select(self, losses: Optional[torch.Tensor], ctx: Ctx) -> Selection:
        return Selection.everything()

    def observe(self, obs: Observation) -> None:
        """Every training forward (and rescoring forward), in step order."""

    def rescore(self, epoch: int) -> Optional[torch.Tensor]:
        """Training-set indices to pass through a forward-only scoring pass at the end of the
        epoch (their results come back through `observe`, counted as selection forwards)."""
        return None

    def lr_factor(self, epoch: int) -> float:
        """Multiplies the schedule's learning rate in this epoch."""
        return 1.0

    def end_epoch(self, epoch: int) -> Dict[str, float]:
        """Once per epoch (host syncs allowed). Returns extra CSV columns."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TraditionalConfig(SamplerConfig):
    """Backpropagate every example (the baseline). Its epoch's remainder is the fixed N mod b of
    uniformly drawn examples, stepped on as any PyTorch loop with drop_last=False does."""
    name: str = "traditional"
    epoch_end: str = "flush"

"""How long a run lasts and how far along it is, in one of four units.

- epochs: epochs of data passed through selection (fractional mid-epoch);
- backprops: backpropagated examples / N (epoch-equivalents);
- seconds: training time (evaluation excluded);
- work: (selection forwards * cost_select + backprops * cost_train) / (N * cost_train): a
  machine-independent, deterministic measure of compute in Traditional-epoch equivalents, like
  Kaddour et al.'s reference system time. With a proxy scorer (cost ratio r), the selection
  forwards cost r * cost_select each and the proxy's own training examples r * cost_train.
  With a data term (budget.charge_data or budget.cost_data: d per example read from storage,
  measured by sbrun-bench as load + decode + augment), every example read costs d too, and a
  Traditional epoch is N * (cost_train + d).

Without `budget.amount` a run lasts `epochs` epochs. Every counter except seconds is a host
integer known without syncing the device, so budget checks cost nothing and a resumed run
crosses the budget at exactly the same step.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import PAPER_COST_SELECT, PAPER_COST_TRAIN, BudgetConfig, ConfigError


@dataclass(frozen=True)
class Costs:
    select: float      # one scoring (selection) forward, per example
    train: float       # one training forward + backward + step, per example
    # With a proxy scorer (scoring.proxy): its scoring forward and its training step, per example
    proxy_select: Optional[float] = None
    proxy_train: Optional[float] = None
    data: float = 0.0  # reading one training example from storage (0: not charged)


def read_costs(cfg: BudgetConfig) -> Costs:
    """Explicit costs win; else a sbrun-bench costs.json (f_sel, fb, and d when charge_data);
    else the paper's 1 : 3 (and no data term)."""
    select, train, data = PAPER_COST_SELECT, PAPER_COST_TRAIN, 0.0
    if cfg.costs:
        try:
            measured = json.loads(Path(cfg.costs).read_text())
            select, train = float(measured["f_sel"]), float(measured["fb"])
            if cfg.charge_data:
                data = float(measured["d"]) * (cfg.cost_train / train if cfg.cost_train is not None else 1.0)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"budget.costs={cfg.costs!r} is invalid ({type(err).__name__}: {err}); allowed: a "
                              f"costs.json written by sbrun-bench, with f_sel and fb (and d with "
                              f"budget.charge_data=true)") from None
    return Costs(cfg.cost_select if cfg.cost_select is not None else select,
                 cfg.cost_train if cfg.cost_train is not None else train,
                 data=cfg.cost_data if cfg.cost_data is not None else data)


def proxy_costs(cfg: BudgetConfig, costs: Costs, ratio: float, explicit: bool,
                setup: Optional[dict] = None) -> tuple[Costs, str]:
    """`costs` with the proxy's, and where they came from: measured (a costs.json with this
    proxy's timings, see measured_proxy), else `ratio` times the main model's; an `explicit`
    ratio (scoring.proxy.cost) wins over a measurement."""
    if cfg.costs and not explicit:
        found = measured_proxy(json.loads(Path(cfg.costs).read_text()), setup)
        if found is not None:    # ratios of the file's timings, applied to the run's costs
            return dataclasses.replace(costs, proxy_select=costs.select * found[0],
                                       proxy_train=costs.train * found[1]), "budget.costs"
    return (dataclasses.replace(costs, proxy_select=ratio * costs.select, proxy_train=ratio * costs.train),
            "scoring.proxy.cost" if explicit else "multiply-adds")


def measured_proxy(measured: dict, setup: Optional[dict]) -> Optional[tuple[float, float]]:
    """The proxy's scoring and training costs as fractions of the main model's f_sel and f+b, from
    a costs.json: its top level (`sbrun-bench --proxy F` writes proxy_f_sel and proxy_fb beside
    f_sel and fb) or a `proxies` entry (sbrun-compare adds one per proxy it charges, each with the
    main model's timings from the same probe). An entry recorded for another proxy is not used."""
    entries = [*measured.get("proxies", []), *([measured] if "proxy_f_sel" in measured else [])]
    for e in entries:
        if "proxy_fb" in e and (setup is None or e.get("proxy", setup) == setup):
            return e["proxy_f_sel"] / e["f_sel"], e["proxy_fb"] / e["fb"]
    return None


# What a costs.json records about the setup it was measured on, compared with the run that reads it.
COSTS_SETUP = ("dataset", "model", "model_kwargs", "image_size", "channels", "precision", "scoring", "proxy")


def costs_mismatch(measured: dict, run: dict) -> str:
    """The setup keys (COSTS_SETUP) where a costs.json and the run differ, as one phrase ('' if
    none); a key the file does not record is not compared."""
    return ", ".join(f"{k} {measured[k]!r} there, {run[k]!r} here" for k in COSTS_SETUP
                     if k in measured and k in run and measured[k] != run[k])


@dataclass(frozen=True)
class Usage:
    """What a run has spent so far (cumulative, all ranks)."""
    epochs: float = 0.0            # completed epochs + the fraction of the current one walked
    select_forwards: int = 0
    backprops: int = 0
    seconds: float = 0.0
    extra_work: float = 0.0        # work outside the main loop (RHO's irreducible-loss model), in work units
    proxy_backprops: int = 0       # examples the proxy scorer trained on (scoring.proxy)
    loaded: int = 0                # training examples read from storage (examples_loaded)


@dataclass(frozen=True)
class Meter:
    unit: str
    total: float          # in `unit`; epochs when no amount is set
    n_train: int
    costs: Costs

    @classmethod
    def of(cls, cfg: BudgetConfig, epochs: int, n_train: int) -> "Meter":
        if cfg.amount is None and cfg.unit != "epochs":
            raise ConfigError(f"budget.amount=null is invalid with budget.unit={cfg.unit}; allowed: a number > 0 "
                              f"({'seconds' if cfg.unit == 'seconds' else 'Traditional-epoch equivalents'})")
        total = float(cfg.amount) if cfg.amount is not None else float(epochs)
        return cls(cfg.unit, total, n_train, read_costs(cfg))

    def work(self, u: Usage) -> float:
        c = self.costs
        if c.proxy_select is not None:     # every scoring forward ran on the proxy, which trains too
            spent = u.select_forwards * c.proxy_select + u.proxy_backprops * c.proxy_train
        else:
            spent = u.select_forwards * c.select
        spent += u.backprops * c.train + u.loaded * c.data
        return spent / (self.n_train * (c.train + c.data)) + u.extra_work

    def used(self, u: Usage) -> float:
        if self.unit == "epochs":
            return u.epochs
        if self.unit == "backprops":
            return u.backprops / self.n_train
        if self.unit == "seconds":
            return u.seconds
        return self.work(u)

    def fraction(self, u: Usage) -> float:
        return min(1.0, self.used(u) / self.total)

    def passed(self, u: Usage) -> int:
        """Whole multiples of `total` used by `u` (the points of an evaluation grid, eval.every)."""
        return math.floor(self.used(u) / self.total * (1 + 1e-12))

    def spent(self, u: Usage) -> bool:
        # a relative tolerance: fractional epoch counts are sums of chunk fractions
        return self.used(u) >= self.total * (1 - 1e-12)

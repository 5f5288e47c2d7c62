"""A proxy scorer: a smaller network runs every scoring forward in place of the main model and
trains online on the examples selected, as in KellerJordan/cifar10-airbench's airbench96_faster.py
(README, Proxy scoring, has the reference's facts and where sbrun differs).

`scoring.proxy.width_factor=F` rebuilds the main model at F times its `width`;
`scoring.proxy.model._target_=...` takes any model (built through build.instantiate_model, like the
main one). `work` charges its scoring forwards and training examples at its own cost
(budget.proxy_costs): the seconds `sbrun-bench --proxy F` measured (costs_proxy.json), else `cost`
times the main model's, where `cost` is `scoring.proxy.cost` or the ratio of their convolution
and linear multiply-adds (machine-independent; small networks on a CPU cost more than it says).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .components import model_config, resolve_target
from .config import Config, ConfigError, DatasetConfig, ModelConfig
from .seeding import derive_seed

PHASES = ("proxy_fwd", "proxy_bwd")     # its training forward and its backward + step (PhaseTimer names)


@dataclass
class Proxy:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    cost: float             # scoring.proxy.cost, else its multiply-adds / the main model's, per example
    lr_scale: float         # its base lr / optim.lr: its lr follows the run's schedule at this scale
    train_every: int
    scored: int = 0         # freshly scored chunks so far; every train_every-th trains it

    def next_chunk_trains(self) -> bool:
        """Count a freshly scored chunk; True when the proxy trains on it (the first one does,
        like the reference's step 0)."""
        due = self.scored % self.train_every == 0
        self.scored += 1
        return due

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scored": self.scored}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scored = int(state["scored"])


def proxy_setup(pc) -> dict:
    """What identifies a proxy in a costs.json (`sbrun-bench --proxy`) and in the run it is read by."""
    return {"width_factor": pc.width_factor, "model": pc.model.get("_target_")}


def proxy_label(pc) -> str:
    """The proxy as one params value (tables and legends tell proxy-scored runs apart by it)."""
    which = f"width_factor={pc.width_factor:g}" if pc.width_factor is not None else f"model={pc.model['_target_']}"
    return f"{which}, train_every={pc.train_every}"


def proxy_model_config(cfg: Config) -> ModelConfig:
    """The proxy's model: scoring.proxy.model as given, or the main model at width_factor x width."""
    pc = cfg.scoring.proxy
    if pc.model.get("_target_") is not None:
        return model_config(dict(pc.model), "scoring.proxy.model")
    m = cfg.model
    params = inspect.signature(resolve_target(m.target, "model._target_")).parameters
    width = m.kwargs.get("width", params["width"].default if "width" in params else None)
    if not isinstance(width, int) or isinstance(width, bool):
        raise ConfigError(f"scoring.proxy.width_factor={pc.width_factor:g} is invalid with model={m.name}: "
                          f"{m.target} takes no integer `width`; allowed: null, or any model as the proxy with "
                          f"scoring.proxy.model._target_=pkg.Net")
    new = max(1, round(width * pc.width_factor))
    return dataclasses.replace(m, name=f"{m.name}_w{new}", kwargs={**m.kwargs, "width": new})


def multiply_adds(model: nn.Module, input_shape: tuple) -> int:
    """Convolution and linear multiply-adds of one example's forward (eval mode, no state change)."""
    total = [0]

    def count(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total[0] += out[0].numel() * k
        else:
            total[0] += out[0].numel() * mod.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros((1, *input_shape), device=p.device if p is not None else "cpu"))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total[0]


def build_proxy(cfg: Config, spec: DatasetConfig, main: nn.Module, instantiate) -> Optional[Proxy]:
    """The run's proxy (None without one), on the CPU. `instantiate(model_config, spec, key)` is
    build.instantiate_model. Its weights come from their own seed, so the run's global random
    stream is the one it would be without a proxy."""
    pc = cfg.scoring.proxy
    if not pc.enabled:
        return None
    m = proxy_model_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "proxy"))
        model = instantiate(m, spec, "scoring.proxy.model")
    cost = pc.cost
    if cost is None:
        shape = (spec.channels, spec.image_size, spec.image_size)
        full = multiply_adds(main, shape)
        if full == 0:
            raise ConfigError(f"scoring.proxy.cost=null is invalid for model={cfg.model.name}: it has no convolution "
                              f"or linear layer to count; allowed: scoring.proxy.cost=RATIO (e.g. from sbrun-bench)")
        cost = multiply_adds(model, shape) / full
    o = cfg.optim
    momentum = o.momentum if pc.momentum is None else pc.momentum
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=momentum, nesterov=o.nesterov and momentum > 0,
                                weight_decay=o.weight_decay if pc.weight_decay is None else pc.weight_decay)
    return Proxy(model, optimizer, float(cost), (pc.lr or o.lr) / o.lr, pc.train_every)


def train_step(proxy: Proxy, x: torch.Tensor, y: torch.Tensor, lr: float, timer, autocast) -> None:
    """One SGD step of the proxy on (x, y): a train-mode forward and a backward of the plain mean
    loss, timed as the proxy_fwd and proxy_bwd phases."""
    if not y.numel():
        return
    proxy.model.train()
    for group in proxy.optimizer.param_groups:
        group["lr"] = lr
    with timer.phase("proxy_fwd"):
        with autocast:
            out = proxy.model(x)
        loss = F.cross_entropy(out.float(), y)
    with timer.phase("proxy_bwd"):
        proxy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        proxy.optimizer.step()

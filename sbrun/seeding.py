"""Named, derived seeds.

Every random stream (data order, augmentation, selection, label noise) gets its own seed derived
from the run seed and a name, and the per-epoch streams are re-seeded from (seed, epoch). A resumed
run therefore replays an epoch exactly without storing generator states, and adding a new stream
never shifts the draws of an existing one.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(device: torch.device | str, *parts) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g


def seed_globals(seed: int) -> None:
    """Seed the global RNGs (dropout, weight init, anything outside the named streams)."""
    random.seed(seed)
    np.random.seed(derive_seed(seed, "numpy") % (2 ** 32))
    torch.manual_seed(seed)


def global_rng_state() -> dict:
    state = {"python": _python_state(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# The Python and NumPy states are converted to tensors and plain numbers so that a checkpoint
# holding them loads with torch.load(weights_only=True).
def _python_state():
    version, internal, gauss = random.getstate()
    return version, torch.tensor(internal, dtype=torch.int64), gauss


def _numpy_state():
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)

"""sbrun: an experiment runner for Selective-Backprop, and its selection rules for any loop.

    import sbrun
    sel, batcher = sbrun.SelectiveBackprop(beta=2.0), sbrun.KeptBatches(batch_size=128)
    keep = sel.select(losses)                     # per-example losses of a no-grad forward
    batcher.add(x[keep], y[keep])
    for xb, yb in batcher.full(): train_step(xb, yb)

The public names load on first use (PEP 562), so `import sbrun` costs nothing and the command-line
tools that do not need torch (sbrun-plot) do not import it through this package.
"""
from importlib import import_module

_PUBLIC = {"SelectiveBackprop": "selection", "TopK": "selection", "RandomKeep": "selection",
           "KeptBatches": "selection", "Selector": "selection", "LossHistory": "selection"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'sbrun' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

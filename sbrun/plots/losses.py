"""SB's selection probability against loss percentile (paper Fig. 4) and the CDF of
per-example losses at the snapshot epochs (paper Fig. 3)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List

import numpy as np
import torch
from matplotlib import colormaps

from .. import records
from ..samplers import rules
from . import data, style
from .style import NotSupported

DEFAULT_BETAS = (1.0, 2.0, 3.0)
LOSS_FLOOR = 1e-6   # losses of exactly 0 still need a place on the log axis


def probability_curve(beta: float, points: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """(percentile, P) through the sampler's own rule: a history of `points` distinct losses,
    each loss's probability computed by rules.sb_probabilities, so the figure shows what the
    code does, not a formula next to it."""
    history = torch.arange(points, dtype=torch.float32)
    probs = rules.sb_probabilities(history, history, beta)
    return rules.loss_percentiles(history, history).numpy(), probs.numpy()


def selection_probability(df=None, out_dir=".", formats=("png",), betas: Iterable[float] = DEFAULT_BETAS) -> List[Path]:
    """Paper Fig. 4: P = percentile^beta for each beta (plus every beta found in the runs)."""
    betas = set(float(b) for b in betas)
    if df is not None and "beta" in df.columns:
        betas |= {float(b) for b in df["beta"].dropna().unique()}
    fig, (ax,) = style.new_figure(1)
    for i, beta in enumerate(sorted(betas)):
        x, p = probability_curve(beta)
        ax.plot(100 * x, p, color=f"C{i}", label=f"β={beta:g} (expected backprop "
                                                f"{style.pct(rules.expected_fraction(beta))})")
    ax.set_xlabel("loss percentile within the recent-loss history (%)")
    ax.set_ylabel("selection probability P")
    ax.set_title("SB: P = percentile^β (paper Fig. 4)", fontsize="medium")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    style.legend(ax, loc="upper left")
    return style.save(fig, Path(out_dir) / "selection_probability", formats)


def load_snapshots(run_dir: Path) -> dict:
    """{epoch: finite per-example losses} from loss_snapshots.npz; examples never seen yet
    carry inf and are left out."""
    path = Path(run_dir) / records.SNAPSHOTS
    if not path.exists():
        return {}
    with np.load(path) as z:
        snaps = {int(k.split("_")[1]): z[k] for k in z.files if k.startswith("epoch_")}
    return {e: v[np.isfinite(v)] for e, v in sorted(snaps.items()) if np.isfinite(v).any()}


def loss_cdf(df, out_dir, formats=("png",)) -> List[Path]:
    """Paper Fig. 3: one panel per configuration (its lowest seed), one CDF per snapshot epoch."""
    df = data.prepare(df)
    cfgs = data.configs(df)
    labels = style.config_labels(cfgs, within="group")
    snaps = {c: s for c, s in ((cfg["config"], load_snapshots(cfg["run"])) for _, cfg in cfgs.iterrows()) if s}
    if not snaps:
        raise NotSupported("no run has loss_snapshots.npz (config key loss_snapshots > 0)")
    written = []
    for suffix, exp in data.per_experiment(df):
        shown = data.configs(exp)
        shown = shown[shown["config"].isin(snaps)]
        if shown.empty:
            continue
        fig, axes = style.new_figure(len(shown), ncols=min(len(shown), 4), panel_size=(4.2, 3.3))
        for ax, (_, cfg) in zip(axes, shown.iterrows()):
            epochs = snaps[cfg["config"]]
            cmap = colormaps["viridis"]
            for j, (epoch, losses) in enumerate(epochs.items()):
                x = np.sort(np.maximum(losses, LOSS_FLOOR))
                y = np.arange(1, len(x) + 1) / len(x)
                ax.plot(x, y, color=cmap(j / max(1, len(epochs) - 1)), label=f"epoch {epoch}")
            style.log_axis(ax, "x")
            ax.set_xlabel("per-example loss (cross-entropy, nats)")
            ax.set_ylabel("fraction of training examples")
            ax.set_title(f"{labels[cfg['config']]}\n{data.noise_title(cfg['label_noise'])}, seed {cfg['seed']}",
                         fontsize="small")
            ax.grid(alpha=0.3)
            style.legend(ax, loc="upper left")
        fig.suptitle("CDF of the most recent per-example losses (paper Fig. 3)\n" + data.experiment_title(exp.iloc[0]),
                     fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"loss_cdf{suffix}", formats)
    return written

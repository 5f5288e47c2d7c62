"""The training examples a sampler chose most and least often (paper Fig. 2), and the histogram
of per-example backprop counts. Read from extremes.npz and selection_counts.csv."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from .. import records
from . import data, style
from .style import NotSupported

MISLABELED = "#d62728"


def _class_name(classes, i: int) -> str:
    name = str(classes[i]) if classes is not None and 0 <= i < len(classes) else str(i)
    return name.split(" - ")[0]   # torchvision MNIST names read '7 - seven'


def _image(arr: np.ndarray) -> tuple:
    """uint8 [C,H,W] -> (array for imshow, cmap)."""
    if arr.shape[0] == 1:
        return arr[0], "gray"
    return np.transpose(arr[:3], (1, 2, 0)), None


def draw_extremes(ax, extremes, n: int = 16, ncols: int = 8) -> float:
    """Up to n most and n least backpropagated images on one Axes; returns its height in cells.

    Each image is titled with its training label and how often it was backpropagated; a
    mislabeled example gets a red frame and its true class underneath. All images go on a single
    Axes (not one Axes each), which keeps a 32-image grid well under a second to render."""
    classes = extremes["classes"] if "classes" in extremes else None
    noisy_any = any(bool(np.any(extremes[f"{b}_noisy"][:n])) for b in ("most", "least"))
    pitch = 1.45 if noisy_any else 1.3   # cell height: title + image (+ "true: x" line)
    y = 0.0
    for name, title in (("most", "Most selected"), ("least", "Least selected")):
        k = min(n, len(extremes[f"{name}_index"]))
        ax.text(ncols / 2, y + 0.35, f"{title} training examples (label ×backprops)", ha="center",
                va="center", fontsize="medium")
        y += 0.55
        for i in range(k):
            r, c = divmod(i, ncols)
            top = y + r * pitch
            img, cmap = _image(extremes[f"{name}_images"][i])
            box = (c + 0.05, c + 0.95, top + 1.2, top + 0.3)   # left, right, bottom, top (y grows down)
            ax.imshow(img, cmap=cmap, vmin=0, vmax=255, extent=box, interpolation="nearest")
            label = _class_name(classes, int(extremes[f"{name}_label"][i]))
            ax.text(c + 0.5, top + 0.27, f"{label} ×{int(extremes[f'{name}_count'][i])}", ha="center",
                    va="bottom", fontsize="x-small")
            if bool(extremes[f"{name}_noisy"][i]):
                true = _class_name(classes, int(extremes[f"{name}_true_label"][i]))
                ax.add_patch(Rectangle((c + 0.05, top + 0.3), 0.9, 0.9, fill=False, ec=MISLABELED, lw=2.5))
                ax.text(c + 0.5, top + 1.23, f"true: {true}", ha="center", va="top", color=MISLABELED,
                        fontsize="x-small")
        y += max(1, -(-k // ncols)) * pitch
    ax.set_xlim(0, ncols)
    ax.set_ylim(y, 0)
    ax.set_axis_off()
    return y


def load_extremes(run_dir: Path):
    """extremes.npz as a dict, or None when the run has none or its counts are all equal
    (e.g. Traditional: every example is backpropagated once per epoch, so there is nothing to show)."""
    path = Path(run_dir) / records.EXTREMES
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        ex = {k: z[k] for k in z.files}
    if not len(ex.get("most_count", [])) or ex["most_count"].max() == ex["least_count"].min():
        return None
    return ex


def extremes_figure(extremes, title: str, n: int = 16, ncols: int = 8):
    """A Figure with the most/least-selected grid (paper Fig. 2) under `title`."""
    fig = style.agg_figure()
    ax = fig.add_axes((0, 0, 1, 1))
    height = draw_extremes(ax, extremes, n, ncols)
    fig.set_size_inches(1.1 * ncols, 1.1 * height + 0.3)
    fig.suptitle(title, fontsize="medium", y=1.0, va="bottom")
    return fig


def selected_images(df, out_dir, formats=("png",), n: int = 16) -> List[Path]:
    """Paper Fig. 2: one grid per configuration (its lowest seed), for samplers whose counts vary.
    Files: selected_images_<configuration>[_noise<rate>][_<experiment>]."""
    df = data.prepare(df)
    written = []
    for suffix, exp in data.per_experiment(df):
        cfgs = data.configs(exp)
        labels = style.config_labels(cfgs, within="group")
        for _, cfg in cfgs.iterrows():
            ex = load_extremes(cfg["run"])
            if ex is None:
                continue
            label, noise = labels[cfg["config"]], cfg["label_noise"]
            title = f"{label}, {data.noise_title(noise)}, seed {cfg['seed']}\n{data.experiment_title(cfg)}"
            noisy = f"_noise{style.slug(style.pct(noise))}" if noise and noise > 0 else ""
            written += style.save(extremes_figure(ex, title, n),
                                  Path(out_dir) / f"selected_images_{style.slug(label)}{noisy}{suffix}", formats)
    if not written:
        raise NotSupported("no run with extremes.npz whose backprop counts vary (Traditional's do not)")
    return written


def _count_line(ax, counts: pd.Series, top: int, **kw) -> None:
    """Share of examples (%) backpropagated exactly c times, c = 0..top, as a step line."""
    share = 100.0 * np.bincount(counts.to_numpy(dtype=np.int64), minlength=top + 1) / len(counts)
    ax.step(np.arange(top + 1), share, where="mid", **kw)


def selection_counts(df, out_dir, formats=("png",)) -> List[Path]:
    """Histogram of per-example backprop counts (lowest seed of each configuration), one panel
    per noise rate; in noisy panels a thin line with crosses shows the mislabeled examples alone."""
    df = data.prepare(df)
    cfgs = data.configs(df)
    styles = style.colours(cfgs)
    counts = {}
    for _, cfg in cfgs.iterrows():
        path = Path(cfg["run"]) / records.COUNTS
        if path.exists():
            c = pd.read_csv(path)
            if c["backprops"].nunique() > 1:
                counts[cfg["config"]] = c
    if not counts:
        raise NotSupported("no run with selection_counts.csv whose counts vary (Traditional's do not)")
    written = []
    for suffix, exp in data.per_experiment(df):
        panels = [(noise, rows) for noise, rows in data.noise_panels(exp) if set(rows["config"]) & set(counts)]
        if not panels:
            continue
        fig, axes = style.new_figure(len(panels))
        for ax, (noise, rows) in zip(axes, panels):
            shown = data.configs(rows)
            shown = shown[shown["config"].isin(counts)]
            labels = style.config_labels(shown)
            top = max(int(counts[c]["backprops"].max()) for c in shown["config"])
            for cfg in labels:
                c = counts[cfg]
                colour, ls = styles[cfg]
                _count_line(ax, c["backprops"], top, color=colour, ls=ls, lw=1.5, label=labels[cfg])
                noisy = c.loc[c["noisy"] == 1, "backprops"]
                if len(noisy):   # same style, thinner, crosses on the counts
                    _count_line(ax, noisy, top, color=colour, ls=ls, lw=0.9, alpha=0.7, marker="x", ms=4,
                                label=f"{labels[cfg]}: mislabeled only")
            ax.set_xlabel("times backpropagated during the run (per training example)")
            ax.set_ylabel("training examples (%)")
            ax.set_title(data.noise_title(noise), fontsize="medium")
            ax.grid(alpha=0.3)
            style.legend(ax)
        fig.suptitle("Per-example selection counts (lowest seed of each configuration;\n"
                     "samplers that backpropagate every example equally often, like Traditional, are omitted)\n"
                     + data.experiment_title(exp.iloc[0]), fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"selection_counts{suffix}", formats)
    return written

"""Names, colours, legend labels and saving, shared by every figure.

Figures are bare `matplotlib.figure.Figure` objects on an explicit Agg canvas: no pyplot, no
global backend switch, so plotting works headless, inside a training process, and next to a
notebook's own backend without touching it.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Dict, List, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from .. import records
from . import keys


def agg_figure(**kwargs) -> Figure:
    """A Figure attached to an Agg canvas (what every figure here is drawn on)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


TRADITIONAL = "traditional"   # the sampler that backpropagates every example: the default baseline
# Display names and base colours, in the order configurations are listed in legends and tables.
FAMILIES = {
    "traditional": ("Traditional", "#000000"),
    "sb": ("SB", "#1f77b4"),
    "stale_sb": ("Stale-SB", "#ff7f0e"),
    "kath18": ("Kath18", "#d62728"),
    "topk": ("Top-k", "#9467bd"),
    "random": ("Random", "#7f7f7f"),
    "composer": ("Composer", "#8c564b"),
    "infobatch": ("InfoBatch", "#2ca02c"),
    "kakurenbo": ("KAKURENBO", "#e377c2"),
    "rho": ("RHO-LOSS", "#17becf"),
    "rs2": ("RS2", "#4d4d4d"),
    "sb_random": ("SB-matched random", "#a6a6a6"),
    "random_matched": ("Random (charged)", "#c7c7c7"),
}
# Samplers without a family colour (none of these is a family's colour).
EXTRA_COLOURS = ["#bcbd22", "#aec7e8", "#ffbb78", "#98df8a"]
LINESTYLES = ["-", "--", ":", "-."]
DPI = 150

# Columns that tell configurations apart beyond sampler/beta/staleness/selectivity; a legend names
# them only when they vary among the curves it shows. Params keys beyond these (keys.extras, e.g.
# selection_forward, budget_amount) are named the same way, as 'key=value'.
EXTRA_LABEL_COLUMNS = [("label_noise", "noise"), ("dataset", ""), ("model", ""), ("batch_size", "batch_size"),
                       ("lr", "lr"), ("epochs", "epochs"), ("setting", ""), ("variant", "")]


def family_name(sampler: str) -> str:
    return FAMILIES.get(sampler, (str(sampler), None))[0]


def family_rank(sampler: str) -> int:
    names = list(FAMILIES)
    return names.index(sampler) if sampler in names else len(names)


def _num(v) -> str:
    """2.0 -> '2', 0.5 -> '0.5' (legends should read like the command line)."""
    return f"{float(v):g}"


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""


def pct(frac: float, digits: int = 0) -> str:
    """0.333 -> '33%'. A missing value reads as 0% (label_noise is absent only when unset)."""
    frac = 0.0 if not _present(frac) else float(frac)
    return f"{100 * frac:.{digits}f}%"


def base_label(row) -> str:
    """'SB β=2 (33%)', 'Stale-SB n=3 β=2 (33%)', 'Traditional (100%)', 'Kath18 (33%)'."""
    parts = [family_name(row["sampler"])]
    if row["sampler"] == "stale_sb" and _present(row.get("staleness")):
        parts.append(f"n={int(row['staleness'])}")
    if _present(row.get("beta")):
        parts.append(f"β={_num(row['beta'])}")
    if _present(row.get("selectivity")):
        parts.append(f"({pct(row['selectivity'])})")
    return " ".join(parts)


def _value(v) -> str:
    return _num(v) if isinstance(v, (float, int)) and not isinstance(v, bool) else str(v)


def _extra(col: str, prefix: str, v) -> str:
    if not _present(v):
        return ""
    if col == "label_noise":
        return f"noise {pct(v)}"
    return f"{prefix}={_value(v)}" if prefix else _value(v)


def label_columns(configs) -> List[tuple]:
    """(column, prefix) pairs a legend may name: the fixed ones and the table's extra params keys."""
    exp_extra, knob_extra = keys.extras(configs)
    return EXTRA_LABEL_COLUMNS + [(k, k) for k in exp_extra + knob_extra]


def config_labels(configs, within: str | None = None) -> Dict[str, str]:
    """Legend label per configuration key, for the configurations one figure shows.

    `configs` has one row per configuration (columns config, sampler, beta, ...). Columns such
    as label_noise or lr are named only where they vary among these rows (or, with `within`,
    among the rows sharing that column's value, e.g. one group), so a label says what tells its
    configuration apart and nothing more.
    """
    if within is not None:
        out = {}
        for _, part in configs.groupby(within, sort=False):
            out.update(config_labels(part))
        return out
    # a key is named where it takes two or more values; one that only some configurations have
    # (selection_forward is recorded for scoring samplers only) is not a difference by itself
    varying = [(c, p) for c, p in label_columns(configs)
               if c in configs.columns and configs[c][configs[c].map(_present)].map(_value).nunique() > 1]
    out = {}
    for _, row in configs.iterrows():
        extras = [e for e in (_extra(c, p, row[c]) for c, p in varying) if e]
        out[row["config"]] = ", ".join([base_label(row)] + extras)
    return out


def colours(configs, within: str | None = "group") -> Dict[str, tuple]:
    """(colour, linestyle) per configuration: its family's colour, and for a family's second,
    third, ... configuration within one `within` value (a panel: one experiment at one noise
    rate) another line style, so a configuration looks the same in every figure of one call."""
    out, seen = {}, {}
    for _, row in configs.iterrows():
        fam = row["sampler"]
        key = (row[within] if within and within in configs.columns else None, fam)
        i = seen.get(key, 0)
        seen[key] = i + 1
        base = FAMILIES.get(fam, (None, None))[1]
        if base is None:
            base = EXTRA_COLOURS[family_rank(fam) % len(EXTRA_COLOURS)]
        out[row["config"]] = (base, LINESTYLES[i % len(LINESTYLES)])
    return out


def slug(text: str) -> str:
    """A file-name-safe version of a label: 'Stale-SB n=3 β=2 (33%)' -> 'stale-sb_n3_b2_33pct'."""
    text = text.lower().replace("β=", "b").replace("n=", "n").replace("%", "pct")
    return re.sub(r"[^a-z0-9.\-]+", "_", text).strip("_") or "config"


def new_figure(n_panels: int = 1, ncols: int | None = None, panel_size=(5.0, 3.6)):
    """A Figure with a grid of n_panels axes (row-major); returns (fig, list of axes)."""
    ncols = ncols or min(n_panels, 3)
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = agg_figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def save(fig: Figure, stem: Path, formats: Sequence[str] = ("png",)) -> List[Path]:
    """Write fig as stem.<fmt> for each format. Each file is rendered to memory first and then
    written atomically, so a reader never finds a half-written image."""
    written = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
        path = Path(f"{stem}.{fmt}")
        records.atomic_write(path, buf.getvalue())
        written.append(path)
    return written


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (2, 5, 10) instead of 2×10^0."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def log_axis(ax, which: str = "y") -> None:
    """Log scale with plain tick labels; minor ticks are labelled only on short spans."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))


def legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kw)


class NotSupported(Exception):
    """The runs given hold no data for this figure (e.g. no staleness sweep); the message says
    what the figure needs, and the caller logs it and moves on."""

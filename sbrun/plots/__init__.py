"""Figures and tables, drawn from run directories only (never by re-running training).

`sbrun-plot` (sbrun/plot_cli.py) calls `report.make_all` on merged runs; the training loop calls
`per_run` when a run ends (config key plots=true). Modules: keys (what makes a configuration),
stats (intervals, paired differences, log-scale speedups and power over seeds), data (pure
aggregation), targets (baseline, targets, per-seed time to target), style (names, colours,
saving), tables (speedup), curves, breakdown, images, losses (the figures).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List

log = logging.getLogger("sbrun.plots")

PER_RUN_DIR = "figures"


def per_run(run_dir) -> List[Path]:
    """The run's own test-error-vs-time curve and most/least-selected grid (PNG) in
    run_dir/figures/. Imports stay inside so a run with plots=false never loads matplotlib."""
    from .. import merge
    from . import curves, data, images, style

    run_dir = Path(run_dir)
    out = run_dir / PER_RUN_DIR
    df = data.prepare(merge.load_run(run_dir))
    if df.empty:
        return []
    label = style.config_labels(data.configs(df))
    first = df.iloc[0]
    title = (f"{next(iter(label.values()))}, {data.noise_title(first['label_noise'])}, seed {first['seed']}\n"
             f"{data.experiment_title(first)}")
    fig, (ax,) = style.new_figure(1)
    curves.draw_curves(ax, df, "train_time_s")
    curves.error_axis(ax, df)
    ax.set_xlabel(curves.X_AXES["train_time_s"])
    ax.set_title(title, fontsize="medium")
    written = style.save(fig, out / "time_to_accuracy")
    ex = images.load_extremes(run_dir)
    if ex is not None:
        written += style.save(images.extremes_figure(ex, title), out / "selected_images")
    else:
        log.info("no most/least-selected grid for %s: every example was backpropagated equally often", run_dir)
    return written

"""Line figures: test error against training time, backprops and epochs (paper Fig. 7/6),
against forward passes for several staleness values (Fig. 11), under label noise (Fig. 12), and
the selectivity sweep (Fig. 13).

Every curve is a configuration's mean over seeds, with the 95% confidence interval of the mean
(Student t) as a band, clipped to [0, 100]% (the titles say so); a configuration with one seed has
no band and says so (see data.py). Error bars are clipped alike. Each experiment gets its own file
and each label-noise rate its own panel.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import data, stats, style, targets
from .style import NotSupported

X_AXES = {
    "train_time_s": "training time (s, evaluation excluded)",
    "backprops": "backpropagated examples",
    "epoch": "epoch (passes over the training set)",
    "forward_passes": "forward passes (selection + training, examples)",
}
BAND = f"band: {stats.CONFIDENCE:.0%} confidence interval of the mean (Student t), clipped to [0, 100]%"
ONE_SEED = "1 seed, no band"
SB_FAMILY = ("sb", "stale_sb")


def band_note(rows: pd.DataFrame) -> str:
    """What a figure's bands mean, for its title; says so when no configuration has two seeds."""
    seeds = data.configs(rows)["seeds"]
    if seeds.max() <= 1:
        return "one seed per configuration: curves are single runs, no confidence band"
    one_seed = f"; '{ONE_SEED}' where a configuration has one seed" if seeds.min() <= 1 else ""
    return f"mean over seeds; {BAND}" + one_seed


def draw_curves(ax, rows: pd.DataFrame, x: str, y: str = "test_error", styles=None, scale: float = 100.0) -> None:
    """One line per configuration in `rows` (legend order): the mean over seeds, with its 95%
    confidence band at the epochs two or more seeds reached. A one-seed configuration gets no
    band and, next to configurations that have one, a legend entry that says '1 seed'."""
    cfgs = data.configs(rows)
    labels = style.config_labels(cfgs)
    styles = styles or style.colours(cfgs)
    curves = data.mean_curve(rows, x, y)
    seeds = dict(zip(cfgs["config"], cfgs["seeds"]))
    mixed = max(seeds.values()) > 1
    for cfg, label in labels.items():
        c = curves[curves["config"] == cfg]
        colour, ls = styles[cfg]
        label += f" ({ONE_SEED})" if mixed and seeds[cfg] == 1 else ""
        ax.plot(c["x"], c["y"] * scale, color=colour, ls=ls, marker="o", ms=2.5, lw=1.4, label=label)
        if (c["n"] > 1).any():   # NaN bounds (epochs with one seed) leave gaps in the band
            ax.fill_between(c["x"], c["y_lo"].clip(lower=0) * scale, c["y_hi"].clip(upper=1) * scale,
                            color=colour, alpha=0.15, lw=0)


def error_axis(ax, rows: pd.DataFrame, y: str = "test_error") -> None:
    """Test error in %, on a log scale when it spans a wide range (early epochs would flatten
    the differences that matter near convergence). The limits follow the runs' errors, not the
    bands: with two or three seeds a 95% band can span decades, and the curves must stay legible."""
    v = 100 * rows[y].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 4:
        style.log_axis(ax, "y")
        ax.set_ylim(v.min() / 1.25, v.max() * 1.25)
    elif len(v) and v.max() > v.min():
        pad = 0.08 * (v.max() - v.min())
        ax.set_ylim(max(0.0, v.min() - pad), v.max() + pad)
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3, which="both")


def _panels(df: pd.DataFrame, keep: Callable[[pd.DataFrame], pd.DataFrame]) -> List[tuple]:
    """Per experiment: (suffix, [(noise, rows), ...]) after `keep` filtered each panel's rows;
    experiments left with no panel are dropped."""
    out = []
    for suffix, exp in data.per_experiment(df):
        panels = [(n, keep(rows)) for n, rows in data.noise_panels(exp)]
        panels = [(n, rows) for n, rows in panels if len(rows)]
        if panels:
            out.append((suffix, panels))
    return out


def _error_figure(df: pd.DataFrame, out_dir: Path, formats: Sequence[str], x: str, name: str, title: str,
                  keep: Callable[[pd.DataFrame], pd.DataFrame] = lambda r: r, why: str = "",
                  extra: Optional[Callable] = None) -> List[Path]:
    """Test error against `x`, one panel per noise rate; `extra(ax, panels)` fills one more
    panel when given."""
    df = data.prepare(df)
    styles = style.colours(data.configs(df))
    written = []
    for suffix, panels in _panels(df, keep):
        fig, axes = style.new_figure(len(panels) + (extra is not None))
        for ax, (noise, rows) in zip(axes, panels):
            draw_curves(ax, rows, x, styles=styles)
            error_axis(ax, rows)
            ax.set_xlabel(X_AXES[x])
            ax.set_title(data.noise_title(noise), fontsize="medium")
            style.legend(ax)
        if extra is not None:
            extra(axes[-1], panels, styles)
        shown = pd.concat([rows for _, rows in panels])
        fig.suptitle(f"{title}\n{data.experiment_title(panels[0][1].iloc[0])}\n{band_note(shown)}", fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"{name}{suffix}", formats)
    if not written:
        raise NotSupported(why or "no runs with test errors")
    return written


def time_to_accuracy(df, out_dir, formats=("png",)) -> List[Path]:
    """Paper Fig. 7: test error against training time."""
    return _error_figure(df, out_dir, formats, "train_time_s", "time_to_accuracy",
                         "Test error vs training time (paper Fig. 7)")


def error_vs_backprops(df, out_dir, formats=("png",)) -> List[Path]:
    """Paper Fig. 6: test error against the number of backpropagated examples."""
    return _error_figure(df, out_dir, formats, "backprops", "error_vs_backprops",
                         "Test error vs backpropagated examples (paper Fig. 6)")


def error_vs_epochs(df, out_dir, formats=("png",)) -> List[Path]:
    return _error_figure(df, out_dir, formats, "epoch", "error_vs_epochs", "Test error vs epochs")


def _staleness_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """SB-family runs at the betas Stale-SB was run with, plus Traditional as the reference;
    empty unless at least two staleness values are present (SB itself is staleness 1)."""
    sb = rows[rows["sampler"].isin(SB_FAMILY)]
    betas = set(sb.loc[sb["sampler"] == "stale_sb", "beta"])
    sb = sb[sb["beta"].isin(betas)]
    if sb["staleness"].fillna(1).nunique() < 2:
        return rows.iloc[:0]
    return pd.concat([rows[rows["sampler"] == style.TRADITIONAL], sb])


def staleness(df, out_dir, formats=("png",)) -> List[Path]:
    """Paper Fig. 11: test error against forward passes for staleness 1 (SB), 2, 3 (Stale-SB)."""
    return _error_figure(df, out_dir, formats, "forward_passes", "staleness",
                         "Test error vs forward passes for several staleness values (paper Fig. 11)",
                         keep=_staleness_rows,
                         why="needs SB/Stale-SB runs with at least two staleness values at one beta "
                             "(e.g. sampler=sb plus sampler=stale_sb sampler.staleness=2,3)")


def _mislabeled_panel(ax, panels, _styles) -> None:
    """Fraction of each epoch's backprops that are mislabeled, for the noisy panels' configs;
    dotted lines mark the noise rates, which is what uniform selection would give. Line styles
    tell the noise rates apart here, so they are assigned across panels."""
    noisy = pd.concat([rows for noise, rows in panels if noise > 0])
    draw_curves(ax, noisy, "epoch", y="mislabeled_frac", styles=style.colours(data.configs(noisy), within=None))
    for noise in sorted(set(noisy["label_noise"])):
        ax.axhline(100 * noise, color="grey", ls=":", lw=1)
    ax.set_xlabel(X_AXES["epoch"])
    ax.set_ylabel("mislabeled share of backprops (%)")
    ax.set_title("Mislabeled examples among backprops\n(dotted: the noise rate)", fontsize="medium")
    ax.grid(alpha=0.3)
    style.legend(ax)


def label_noise(df, out_dir, formats=("png",)) -> List[Path]:
    """Paper Fig. 12: SB vs Traditional at each label-noise rate, plus the mislabeled fraction
    of backpropagated examples over training."""
    df = data.prepare(df)
    if not (df["label_noise"].fillna(0) > 0).any():
        raise NotSupported("needs runs with label_noise > 0 (e.g. label_noise=0.01,0.1,0.2)")
    keep = lambda r: r[r["sampler"].isin((style.TRADITIONAL, "sb"))]  # noqa: E731
    noisy = df[df["experiment"].isin(df.loc[df["label_noise"].fillna(0) > 0, "experiment"])]
    return _error_figure(noisy, out_dir, formats, "train_time_s", "label_noise",
                         "SB vs Traditional under label noise (paper Fig. 12)", keep=keep,
                         why="needs SB and Traditional runs with label_noise > 0",
                         extra=_mislabeled_panel)


def selectivity(df, out_dir, formats=("png",), k: float = 1.2, baseline: str = targets.BASELINE) -> List[Path]:
    """Paper Fig. 13: final test error and time to k x the baseline's final error against the
    selectivity 1/(1+beta), one line per sampler family (and noise rate); Traditional at 100%.
    Errors carry 95% CI bars clipped to [0, 100]%; times are the speedup table's: interpolated
    between evaluations, geometric means over the seeds its ratio uses, marked 'r/n' where some
    never reached the target."""
    from .tables import speedup_table  # tables reads the per-seed times this figure shows

    df = data.drop_duplicate_seeds(df)[0]
    cfgs = data.configs(df).join(data.config_final_error(df), on="config")
    sp = speedup_table(df, ks=(k,), baseline=baseline)
    at = dict(zip(sp["config"], zip(sp["time"], sp["reached"]))) if "time" in sp.columns else {}
    cfgs["time"] = [at.get(c, (math.nan, 0))[0] for c in cfgs["config"]]
    cfgs["reached"] = [at.get(c, (math.nan, 0))[1] for c in cfgs["config"]]
    # A line per sampler family within a group (staleness, variant and other knobs kept apart),
    # if it has >= 2 points.
    _, _, config_cols = data.key_columns(df)
    apart = [c for c in config_cols if c not in ("beta", "selectivity")]
    cfgs["line"] = cfgs.apply(lambda r: "|".join(data.fmt(r[c]) for c in apart), axis=1)
    swept = cfgs[cfgs["sampler"] != style.TRADITIONAL].groupby("line")["selectivity"].nunique()
    lines = swept[swept >= 2].index
    if not len(lines):
        raise NotSupported("needs one sampler run at two or more selectivities (e.g. sampler=sb beta=1,2,3)")
    written = []
    groups_shown = set(cfgs.loc[cfgs["line"].isin(lines), "group"])
    for suffix, exp in data.per_experiment(df):
        shown = cfgs[cfgs["experiment"].isin(set(exp["experiment"])) & cfgs["group"].isin(groups_shown)]
        if shown.empty:
            continue
        several_noise = shown["label_noise"].nunique() > 1
        line_labels = style.config_labels(shown.assign(beta=np.nan, selectivity=np.nan))
        fig, (ax_err, ax_time) = style.new_figure(2)
        for line in [ln for ln in dict.fromkeys(shown["line"]) if ln in lines]:
            pts = shown[shown["line"] == line].sort_values("selectivity")
            r = pts.iloc[0]
            label = line_labels[r["config"]]
            colour = style.FAMILIES.get(r["sampler"], (None, "C0"))[1]
            ls = style.LINESTYLES[sorted(shown["group"].unique()).index(r["group"]) % len(style.LINESTYLES)]
            _selectivity_points(ax_err, ax_time, pts, dict(color=colour, ls=ls, marker="o", label=label))
        for _, trad in shown[shown["sampler"] == style.TRADITIONAL].groupby("group"):
            r = trad.iloc[0]
            label = "Traditional (100%)" + (f", noise {style.pct(r['label_noise'])}" if several_noise else "")
            _selectivity_points(ax_err, ax_time, trad.iloc[:1].assign(selectivity=1.0),
                                dict(color="k", ls="", marker="*", ms=10, label=label))
        ax_err.set_ylabel("final test error (%)")
        ax_time.set_ylabel(f"time to {k:g}× the baseline's final error (s)")
        ax_err.set_title(f"Final test error (bars: {stats.CONFIDENCE:.0%} CI over seeds,\nclipped to [0, 100]%)",
                         fontsize="medium")
        ax_time.set_title("Time to target (interpolated), geometric mean over the seeds\nthat reached it "
                          "(r/n: seeds that reached it; missing point: none did)", fontsize="medium")
        for ax in (ax_err, ax_time):
            ax.set_xlabel("selectivity: expected backprop fraction 1/(1+β) (%)")
            ax.grid(alpha=0.3)
            style.legend(ax)
        fig.suptitle(f"Selectivity sweep (paper Fig. 13)\n{data.experiment_title(exp.iloc[0])}", fontsize="medium")
        written += style.save(fig, Path(out_dir) / f"selectivity{suffix}", formats)
    return written


def _selectivity_points(ax_err, ax_time, pts: pd.DataFrame, kw: dict) -> None:
    """Final error with CI bars clipped to [0, 100]% (none for one seed) and time to target,
    marking partial reach."""
    sel = 100 * pts["selectivity"].to_numpy(dtype=float)
    ax_err.errorbar(sel, 100 * pts["final_mean"], yerr=error_bars(pts), capsize=3, **kw)
    ax_time.plot(sel, pts["time"], **kw)
    for x, t, reached, seeds in zip(sel, pts["time"], pts["reached"], pts["seeds"]):
        if np.isfinite(t) and reached < seeds:
            ax_time.annotate(f"{reached}/{seeds}", (x, t), textcoords="offset points", xytext=(3, 3),
                             fontsize="x-small")


def error_bars(pts: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths in % (2 x n) from data.config_final_error's clipped bounds:
    the bars stop at 0% and 100%; none (0) where one seed gives no interval."""
    mean = pts["final_mean"].to_numpy(dtype=float)
    below = mean - pts["final_lo"].to_numpy(dtype=float)
    above = pts["final_hi"].to_numpy(dtype=float) - mean
    return np.nan_to_num(100 * np.vstack([below, above]))

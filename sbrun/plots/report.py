"""Every figure and table the runs support, in one call (what `sbrun-plot` runs)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence

import pandas as pd

from . import breakdown, curves, data, images, losses, tables
from ..records import OutputError
from .style import NotSupported

log = logging.getLogger("sbrun.plots")

# name -> figure function(df, out_dir, formats, **options); the paper's figure in the docstring.
FIGURES: Dict[str, Callable] = {
    "time_to_accuracy": curves.time_to_accuracy,
    "error_vs_backprops": curves.error_vs_backprops,
    "error_vs_epochs": curves.error_vs_epochs,
    "time_breakdown": breakdown.time_breakdown,
    "selected_images": images.selected_images,
    "selection_counts": images.selection_counts,
    "staleness": curves.staleness,
    "label_noise": curves.label_noise,
    "selectivity": curves.selectivity,
    "selection_probability": losses.selection_probability,
    "loss_cdf": losses.loss_cdf,
}
# Figures that read a target k (the middle of the table's ks unless told otherwise).
TAKES_K = {"time_breakdown", "selectivity"}


class Report(NamedTuple):
    written: List[Path]     # every file written
    skipped: List[str]      # "name: what the figure needs" for figures the runs do not support
    failed: List[str]       # "name: error" for figures that raised (the others are still drawn)
    speedup_md: str         # the speedup table as Markdown


def make_all(df: pd.DataFrame, out_dir: Path, formats: Sequence[str] = ("png", "pdf"),
             ks: Sequence[float] = tables.DEFAULT_KS, figures: Dict[str, Callable] | None = None) -> Report:
    """Write the tables and every supported figure (or those in `figures`)."""
    out_dir = Path(out_dir)
    df = data.prepare(data.attach_overrides(df))
    k_mid = sorted(ks)[len(ks) // 2]
    written, speedup_md = tables.write_tables(df, out_dir, ks)
    report = Report(written, [], [], speedup_md)
    for name, fn in (FIGURES if figures is None else figures).items():
        try:
            written += fn(df, out_dir, formats, **({"k": k_mid} if name in TAKES_K else {}))
        except NotSupported as why:
            report.skipped.append(f"{name}: {why}")
        except OutputError:
            raise   # a full disk or read-only folder fails every figure alike
        except Exception as err:  # one broken figure must not cost the others
            log.debug("figure %s failed", name, exc_info=True)
            report.failed.append(f"{name}: {type(err).__name__}: {err}")
    return report

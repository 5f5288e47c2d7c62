"""Every figure and table the runs support, in one call (what `sbrun-plot` runs)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import pandas as pd

from ..records import OutputError
from . import breakdown, budget, curves, data, images, losses, tables, targets
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
    "budget": budget.budget,
}
# Figures that read a target: k (the middle of the table's ks unless told otherwise) and the baseline.
TAKES_K = {"time_breakdown", "selectivity"}


class Report(NamedTuple):
    written: List[Path]     # every file written
    skipped: List[str]      # "name: what the figure needs" for figures the runs do not support
    failed: List[str]       # "name: error" for figures that raised (the others are still drawn)
    speedup_md: str         # the speedup table as Markdown
    notes: List[str]        # one line each: what the tables could not show, and why


def clean(df: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """The merged runs ready for make_all (overrides split, keys added, one run per configuration
    and seed), and a note naming any duplicate runs dropped."""
    df, dropped = data.drop_duplicate_seeds(data.prepare(data.attach_overrides(df)))
    notes = []
    if dropped:
        notes.append(f"{len(dropped)} run(s) repeat a (configuration, seed) pair and are left out, keeping one run "
                     f"per pair (finished, then most epochs, then most recent): "
                     + "; ".join(f"{d} (kept {k})" for d, k in dropped))
    return df, notes


def make_all(df: pd.DataFrame, out_dir: Path, formats: Sequence[str] = ("png", "pdf"),
             ks: Sequence[float] = tables.DEFAULT_KS, figures: Dict[str, Callable] | None = None,
             baseline: str = targets.BASELINE) -> Report:
    """Write the tables and every supported figure (or those in `figures`). A duplicate
    (configuration, seed) run is dropped here too; call `clean` first to learn which."""
    out_dir = Path(out_dir)
    df, notes = clean(df)
    k_mid = sorted(ks)[len(ks) // 2]
    written, speedup_md, table_notes = tables.write_tables(df, out_dir, ks, baseline)
    report = Report(written, [], [], speedup_md, notes + table_notes)
    for name, fn in (FIGURES if figures is None else figures).items():
        try:
            written += fn(df, out_dir, formats, **({"k": k_mid, "baseline": baseline} if name in TAKES_K else {}))
        except NotSupported as why:
            report.skipped.append(f"{name}: {why}")
        except OutputError:
            raise   # a full disk or read-only folder fails every figure alike
        except Exception as err:  # one broken figure must not cost the others
            log.debug("figure %s failed", name, exc_info=True)
            report.failed.append(f"{name}: {type(err).__name__}: {err}")
    return report

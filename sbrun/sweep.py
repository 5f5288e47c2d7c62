"""Hydra callback: at the end of every sweep, merge its runs into runs.csv and list failures."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .merge import NoRunsError, write_sweep_outputs

log = logging.getLogger("sbrun")

# The latest sweep's report in this process; `sbrun` exits non-zero when it lists failed jobs.
last_report = None


class MergeRunsCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_report
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            df, last_report = write_sweep_outputs(sweep_dir)
        except NoRunsError as err:
            log.warning("no sweep summary for %s: %s", sweep_dir, err)
            return
        if df is None:
            log.warning("no runs.csv for %s: no job finished an epoch", sweep_dir)
            return
        log.info("merged %d runs (%d rows) into %s", df["run"].nunique(), len(df), sweep_dir / "runs.csv")

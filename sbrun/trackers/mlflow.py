"""`logger=mlflow`: an MLflow run per sbrun run, in a file store under out_dir by default
(`mlflow ui --backend-store-uri results/mlruns`), or any tracking URI."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .base import RunInfo, Tracker, flat_params

STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


class MlflowTracker(Tracker):
    package, extra = "mlflow", "mlflow"

    def __init__(self, tracking_uri: Optional[str] = None, experiment: str = "sbrun",
                 tags: Optional[Dict[str, str]] = None):
        if not experiment:
            raise ValueError(f"experiment={experiment!r} is invalid; allowed: an MLflow experiment name")
        self.tracking_uri, self.experiment, self.tags = tracking_uri, experiment, dict(tags or {})
        self.stored_step = 0

    def start(self, run: RunInfo, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        # by default file:<out_dir>/mlruns: one store for all runs and sweeps under out_dir
        uri = self.tracking_uri or (Path(run.config.get("out_dir") or run.run_dir.parent) / "mlruns").resolve().as_uri()
        if "://" not in uri or uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked; it is the store that needs no server
            # or database and takes concurrent sweep jobs on a shared file system.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        params = flat_params(run.config)
        if saved and saved.get("run_id"):
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            known = self.client.get_run(self.run_id).data
            # Steps the store holds beyond the last recorded one (a kill between logging and
            # recording) are not sent again.
            self.stored_step = max((m.step for key in known.metrics
                                    for m in self.client.get_metric_history(self.run_id, key)), default=0)
            params = {k: v for k, v in params.items() if k not in known.params}   # params are write-once
        else:
            tags = {"sbrun.run_dir": str(Path(run.run_dir).resolve()), **self.tags}
            self.run_id = self.client.create_run(self._experiment_id(), run_name=run.name,
                                                 tags=tags).info.run_id
        self._log_params(params)
        return {"run_id": self.run_id, "tracking_uri": uri}

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:   # a parallel sweep job created it first
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _log_params(self, params: Dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if step <= self.stored_step:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, status: str, artifacts: List[Path]) -> None:
        try:
            for path in artifacts:   # kept at their place relative to the run directory
                folder = path.relative_to(self.run_dir).parent.as_posix()
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        finally:
            self.client.set_terminated(self.run_id, status=STATUS[status])

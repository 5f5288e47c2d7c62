"""`logger=wandb`: a Weights & Biases run per sbrun run, resumed by id. Offline with
WANDB_MODE=offline (or logger.wandb.mode=offline); `wandb sync` uploads it later."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .base import RunInfo, Tracker

MODES = ("online", "offline", "disabled")
# W&B marks any non-zero exit code failed; "stopped" is also flagged as pre-empted (resumable).
EXIT_CODES = {"finished": 0, "failed": 1, "stopped": 3}


class WandbTracker(Tracker):
    package, extra = "wandb", "wandb"

    def __init__(self, project: str = "sbrun", entity: Optional[str] = None, mode: Optional[str] = None,
                 group: Optional[str] = None, tags: Sequence[str] = (), job_type: Optional[str] = None,
                 dir: Optional[str] = None):
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid; allowed: null (WANDB_MODE or online), "
                             f"{', '.join(MODES)}")
        if not project:
            raise ValueError(f"project={project!r} is invalid; allowed: a W&B project name")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.tags, self.job_type, self.dir = group, list(tags or ()), job_type, dir

    def start(self, run: RunInfo, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        import wandb

        run_id = (saved or {}).get("id") or secrets.token_hex(6)   # W&B ids: up to 64 of [a-z0-9_-]
        wandb_dir = Path(self.dir or run.run_dir)   # <run_dir>/wandb/ by default: the run's files stay together
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, group=self.group,
            tags=self.tags or None, job_type=self.job_type, dir=str(wandb_dir), name=run.name,
            id=run_id, resume="allow" if saved else "never", config=run.config,
            # sbrun writes run.log itself; W&B's console capture would also wrap tqdm's bar.
            # create_new: a sweep's jobs run one after another in one process.
            settings=wandb.Settings(console="off", reinit="create_new"))
        return {"id": run_id, "project": self.project, "entity": self.entity}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, status: str, artifacts: List[Path]) -> None:
        import wandb

        try:
            images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in artifacts if p.suffix == ".png"}
            if images:   # the last epoch's step: media sit with the final metrics
                self.run.log(images, step=self.step)
            for path in artifacts:   # the Files tab, under the path relative to the run directory
                self.run.save(str(path.resolve()), base_path=str(self.run_dir.resolve()), policy="now")
            self.run.summary["status"] = status
            if status == "stopped":
                self.run.mark_preempting()
        finally:
            self.run.finish(exit_code=EXIT_CODES[status])

"""`logger=tensorboard`: event files in <run_dir>/tensorboard, so `tensorboard --logdir results`
shows every run and sweep job side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .base import RunInfo, Tracker, flat_params


class TensorBoardTracker(Tracker):
    package, extra = "tensorboard", "tensorboard"

    def __init__(self, dir: Optional[str] = None,
                 hparam_metrics: Sequence[str] = ("test_acc", "test_loss", "train_loss")):
        self.dir = dir
        self.hparam_metrics = list(hparam_metrics or ())

    def start(self, run: RunInfo, saved: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(self.dir or run.run_dir / "tensorboard")
        # purge_step: events an earlier process wrote after its last recorded step (it was killed
        # between logging and recording) are hidden from readers, so the resumed curve has no
        # duplicate steps.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=self.step + 1 if saved else None)
        if saved is None:   # the config is written once per tracker run, not on every resume
            self._write_config(run.config)
        self.writer.flush()
        return {"log_dir": str(log_dir)}

    def _write_config(self, config: Dict[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard.summary import hparams

        text = yaml.safe_dump(config, sort_keys=False)
        # Markdown: a 4-space indent renders the YAML verbatim in the Text tab.
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)
        # Written into this run's own event file (SummaryWriter.add_hparams would make a sub-run),
        # so the HParams tab pairs the config with this run's scalars of the named metrics.
        for summary in hparams(flat_params(config), {m: 0.0 for m in self.hparam_metrics}):
            self.writer.file_writer.add_summary(summary)

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()   # a live `tensorboard` sees every epoch; a kill loses nothing sent

    def finish(self, status: str, artifacts: List[Path]) -> None:
        import numpy as np
        from PIL import Image

        try:
            for path in (p for p in artifacts if p.suffix == ".png"):
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("RGB"))
                self.writer.add_image(f"figures/{path.stem}", pixels, self.step, dataformats="HWC")
            self.writer.add_text("status", status, self.step)
        finally:
            self.writer.close()

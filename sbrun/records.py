"""Everything a run writes, written so that a reader never sees half a file.

Every file is produced by `atomic_write`: temp file in the same directory, fsync, rename. After a
crash, a file holds either its previous or its new content. A failed write (full disk, read-only
directory) raises `OutputError` with one line and leaves the previous file in place.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch

METRICS = "metrics.csv"
SUMMARY = "summary.json"
COUNTS = "selection_counts.csv"
EXTREMES = "extremes.npz"
SNAPSHOTS = "loss_snapshots.npz"

# Status values of summary.json.
RUNNING, FINISHED, FAILED, STOPPED = "running", "finished", "failed", "stopped"


_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(RuntimeError):
    """An output that could not be written. The message is one line meant for the user."""


def atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)   # mkstemp creates 0600; outputs are shared like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}; earlier files are intact") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def csv_bytes(rows: List[Dict], columns: Optional[List[str]] = None) -> bytes:
    columns = columns or list(rows[0].keys())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


class MetricsLog:
    """metrics.csv: one row per epoch. Each write rewrites the file atomically, so a row is
    either all there or not there at all, whatever kills the process."""

    def __init__(self, run_dir: Path, rows: Optional[List[Dict]] = None):
        self.path = Path(run_dir) / METRICS
        self.rows: List[Dict] = list(rows or [])

    def write(self) -> None:
        if self.rows:
            atomic_write(self.path, csv_bytes(self.rows, _columns(self.rows)))


def _columns(rows: Iterable[Dict]) -> List[str]:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_counts(run_dir: Path, counts: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor,
                 noisy: torch.Tensor, last_loss: torch.Tensor) -> None:
    """Per-example backprop counts with labels and the noisy mask (selection_counts.csv)."""
    import pandas as pd

    table = pd.DataFrame({"index": np.arange(counts.numel()), "label": labels.cpu().numpy(),
                          "true_label": true_labels.cpu().numpy(),
                          "noisy": noisy.cpu().numpy().astype(np.int8),
                          "backprops": counts.cpu().numpy().astype(np.int64),
                          "last_loss": last_loss.float().cpu().numpy()})
    atomic_write(Path(run_dir) / COUNTS, table.to_csv(index=False, float_format="%.6g").encode())


def write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, buf.getvalue())


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            return None
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def environment(device: torch.device) -> Dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"git_commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": name, "host": socket.gethostname(),
            "cpu_threads": torch.get_num_threads()}

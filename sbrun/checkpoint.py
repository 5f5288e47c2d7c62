"""Checkpoints: atomic, verified, and never a code-execution path.

A checkpoint is `ckpt/<tag>.pt` (torch.save of tensors and plain values only) plus a sidecar
`ckpt/<tag>.json` holding its SHA-256, written after it. Loading requires the sidecar, a matching
digest and `torch.load(weights_only=True)`, so a truncated, modified or foreign file is refused
with one line instead of being unpickled.
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import List, Optional

import torch

from .messages import one_line
from .records import atomic_write, read_json, write_json

CKPT_DIR = "ckpt"
_TAG = re.compile(r"^e(\d{5})(?:_b(\d{7}))?$")


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used. The message is one line meant for the user."""


def tag(epoch: int, chunk: Optional[int] = None) -> str:
    """e00003 = before epoch 3 starts; e00003_b0000120 = inside epoch 3, before chunk 120."""
    return f"e{epoch:05d}" if chunk is None else f"e{epoch:05d}_b{chunk:07d}"


def _order(path: Path):
    m = _TAG.match(path.stem)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)


def listed(run_dir: Path) -> List[Path]:
    """Complete checkpoints (with a sidecar), oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [p for p in d.glob("e*.pt") if _TAG.match(p.stem) and p.with_suffix(".json").exists()]
    return sorted(found, key=_order)


def latest(run_dir: Path) -> Optional[Path]:
    found = listed(run_dir)
    return found[-1] if found else None


def save(run_dir: Path, state: dict, name: str, keep: int) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = Path(run_dir) / CKPT_DIR / f"{name}.pt"
    atomic_write(path, data)
    write_json(path.with_suffix(".json"), {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                           "epoch": state.get("epoch"), "chunk": state.get("chunk")})
    for old in listed(run_dir)[:-keep]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict:
    path = Path(path)
    meta = read_json(path.with_suffix(".json"))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if not meta or meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"checkpoint {path} does not match its recorded SHA-256 "
                              f"({path.with_suffix('.json').name}); it was modified or is incomplete, "
                              f"so it is refused")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for anything but tensors and plain values
        raise CheckpointError(f"checkpoint {path} holds more than tensors and plain values "
                              f"({one_line(err, limit=120)}); refused") from None

"""`dataset=arrays`: a user's images and labels from one .npz file.

The file holds x_train, y_train, x_test, y_test (and optionally `classes`, an array of names), as
written by `np.savez(path, x_train=..., ...)`; check.py says what the arrays may look like.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..messages import one_line
from .check import KEYS, LAYOUT, as_train_test, check_keys
from .sets import DataError, TrainTest

# What a damaged or foreign file raises inside np.load / NpzFile access.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_arrays(path) -> TrainTest:
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory (an image folder is dataset=folder)" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what}; dataset.path must name an .npz with {LAYOUT}")
    try:
        with open(path, "rb") as f:
            kind = _kind(f.read(6))
        if kind:
            raise DataError(f"{path}: not an .npz ({kind}); save one with "
                            f"np.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)")
        # allow_pickle=False: loading a pickle runs code from the file; plain arrays never need it.
        npz = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise DataError(f"{path}: {_why(err)}") from None
    with npz:
        check_keys(list(npz.files), str(path))
        arrays = {}
        for key in (*KEYS, "classes"):
            if key in npz.files:
                try:
                    arrays[key] = npz[key]
                except _READ_ERRORS as err:
                    raise DataError(f"{path}: {key}: {_why(err)}") from None
    return as_train_test(arrays, str(path))


def _kind(magic: bytes) -> str:
    """What the first bytes say the file is, if not an npz ('' if it is one); np.load tells the
    formats apart by the same bytes."""
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ""
    if magic.startswith(b"\x93NUMPY"):
        return "it is a single .npy array"
    if magic.startswith(b"\x80"):
        return "it is a Python pickle, refused: unpickling runs code from the file"
    return "it is empty" if not magic else "no zip header"


def _why(err: BaseException) -> str:
    if "allow_pickle" in str(err):   # an object array inside the npz
        return ("holds Python objects, refused: unpickling runs code from the file; "
                "save plain numeric arrays (uint8 images, integer labels, string class names)")
    if isinstance(err, PermissionError):
        return "cannot read the file (permission denied)"
    if isinstance(err, (zipfile.BadZipFile, EOFError, zlib.error)):
        return f"a damaged .npz ({one_line(err, lines=None, limit=160)}); write it again with np.savez"
    return f"cannot read the file ({one_line(err, lines=None, limit=160)})"

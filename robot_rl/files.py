"""Files a crash never leaves half-written, and JSON that stays JSON.

Every checkpoint, weight file, sidecar and summary goes through `write_atomic`: a temporary file in the same folder,
fsynced, renamed over the target, and the folder fsynced, so a kill at any instant leaves the old file or the new
one, never a mix. `json_text` is the one JSON encoder for results: NaN and inf (an undefined rank correlation, a
Sharpe ratio over zero spread) become null, which strict JSON readers accept, and NumPy values and paths become
plain numbers, lists and strings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")  # unique, created under the umask
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            with contextlib.suppress(FileNotFoundError):  # a rewrite keeps the file's permissions
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as strict JSON: non-finite floats as null, NumPy scalars and arrays as numbers and lists, paths as
    strings; anything else that JSON cannot hold is a TypeError."""
    return json.dumps(_finite(value), indent=indent, default=lambda v: _finite(_plain(v)), allow_nan=False)


def write_json(path: str | Path, value: Any) -> None:
    """`json_text(value)`, indented, written atomically."""
    write_atomic(path, json_text(value, indent=1).encode())


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")

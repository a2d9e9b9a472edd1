"""robot_rl.files: the one atomic writer and the one JSON encoder for results."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from robot_rl.files import json_text, write_atomic, write_json


def test_write_atomic_writes_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "sub" / "weights.bin"
    write_atomic(path, b"first")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_bytes() == b"first" and path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o750)  # no umask makes this mode for a new file (open creates from 0o666)
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second" and path.stat().st_mode & 0o777 == 0o750  # a rewrite keeps the mode
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.bin"]  # no temporary file left


def test_json_text_writes_strict_json_with_nulls_for_undefined_figures(tmp_path):
    value = {"nan": float("nan"), "inf": np.float32("inf"), "nested": [1.0, (np.nan, 2)], "scalar": np.int64(3),
             "array": np.array([[1.0, np.nan]]), "flag": np.bool_(True), "path": Path("runs/x")}
    text = json_text(value)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "nan": None, "inf": None, "nested": [1.0, [None, 2]], "scalar": 3, "array": [[1.0, None]], "flag": True,
        "path": "runs/x"}
    with pytest.raises(TypeError, match="not JSON serializable: set"):
        json_text({"s": {1}})
    write_json(tmp_path / "summary.json", {"score": math.inf})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"score": None}

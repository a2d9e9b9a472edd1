"""Learner checkpoints: flax msgpack (no pickle), each file with a JSON sidecar carrying its sha256, and a `latest.json`
pointer written last. Every file is written to a temporary name and renamed, so a learner killed at any instant
leaves the previous checkpoint valid and the pointer naming a complete, verifiable file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax

from robot_rl.errors import UserError
from robot_rl.files import write_atomic, write_json

FORMAT = "flax-msgpack"
POINTER = "latest.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(directory: str | Path, state: Any, meta: dict[str, Any], step: int, keep: int = 2) -> Path:
    """Write `ckpt_<step>.msgpack` + `.json` sidecar, then point `latest.json` at it; keep the newest `keep` files.

    `meta` must be JSON-serializable (config, loop counters, reward-scaler statistics).
    """
    directory = Path(directory)
    data = flax.serialization.to_bytes(state)
    path = directory / f"ckpt_{step:010d}.msgpack"
    sidecar = {"format": FORMAT, "sha256": sha256_hex(data), "bytes": len(data), "step": step, "meta": meta}
    write_atomic(path, data)
    write_json(path.with_suffix(".json"), sidecar)
    write_json(directory / POINTER, {"file": path.name, "sha256": sidecar["sha256"]})
    for old in sorted(directory.glob("ckpt_*.msgpack"))[:-keep]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / POINTER
    if not pointer.is_file():
        return None
    return Path(directory) / json.loads(pointer.read_text())["file"]


def read_checkpoint(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """Bytes and sidecar of a checkpoint file (or of a folder's latest), verified against the recorded sha256."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"no checkpoint in {path} (no {POINTER}); train first or pass a checkpoint file")
        path = found
    sidecar_path = path.with_suffix(".json")
    if not path.is_file() or not sidecar_path.is_file():
        raise UserError(f"checkpoint {path} or its sidecar {sidecar_path.name} is missing; pass a complete checkpoint")
    sidecar = json.loads(sidecar_path.read_text())
    data = path.read_bytes()
    if sidecar.get("format") != FORMAT or sha256_hex(data) != sidecar.get("sha256"):
        raise UserError(f"checkpoint {path} does not match its sha256 sidecar (corrupt or partial); use an older one")
    return data, sidecar


def load_checkpoint(path: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restore a state with the structure of `template` (e.g. a freshly initialized TrainState); returns
    (state, sidecar) where `sidecar["meta"]` is what `save_checkpoint` was given."""
    data, sidecar = read_checkpoint(path)
    try:
        state = flax.serialization.from_bytes(template, data)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"checkpoint {path} does not fit this learner ({exc}); check the recipe and task") from exc
    shapes = [getattr(x, "shape", None) for x in jax.tree_util.tree_leaves(state)]
    if shapes != [getattr(x, "shape", None) for x in jax.tree_util.tree_leaves(template)]:
        raise UserError(f"checkpoint {path} has other network sizes than this learner; check the recipe and task")
    return state, sidecar

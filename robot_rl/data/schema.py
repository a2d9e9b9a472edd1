"""What an episode store holds: per-step keys with fixed shapes and dtypes, and per-episode fields.

The schema is declared once at creation and stored in the group attributes, so every later writer and reader checks
against the same contract. Checking a step here, before anything touches disk, is what keeps bad input out of a store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot_rl.errors import UserError

FORMAT_NAME = "robot_rl.episodes"
FORMAT_VERSION = 1

# Keys that may be all-NaN in a step: "no value" (e.g. no human acted). Partly-NaN values are still rejected.
NULLABLE_KEYS = frozenset({"human_action"})

SOURCES = ("scripted", "teleop", "policy")

# Per-episode fields: name -> (dtype, default). `success` and `source` are required by `end_episode`.
EPISODE_FIELDS: dict[str, tuple[str, object]] = {
    "source": ("str", None),
    "policy_id": ("str", ""),
    "success": ("bool", None),
    "length": ("int64", 0),
    "task": ("str", ""),
    "domain": ("str", "sim"),
    "started_at": ("float64", math.nan),
}

_KIND_NAMES = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}


@dataclass(frozen=True)
class KeySpec:
    """One per-step key: its shape without the time axis, and its dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def step_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def parse_schema(schema: dict) -> dict[str, KeySpec]:
    """Turn `{key: (shape, dtype)}` (or the JSON form `{key: {"shape": [...], "dtype": ...}}`) into KeySpecs."""
    if not isinstance(schema, dict) or not schema:
        raise UserError("schema must be a non-empty dict {key: (shape, dtype)}, e.g. {'action': ((7,), 'float32')}")
    specs = {}
    for key, value in schema.items():
        if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/") or "//" in key:
            raise UserError(f"schema key {key!r} is not a valid name; use names like 'obs/state' or 'action'")
        if isinstance(value, dict):
            shape, dtype = value.get("shape"), value.get("dtype")
        else:
            try:
                shape, dtype = value
            except (TypeError, ValueError):
                raise UserError(f"schema entry for {key!r} must be (shape, dtype), got {value!r}") from None
        try:
            shape = tuple(int(d) for d in shape)
            dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise UserError(f"schema entry for {key!r} has a bad shape or dtype: {value!r}") from None
        if any(d <= 0 for d in shape):
            raise UserError(f"schema entry for {key!r} has a non-positive dimension in shape {shape}")
        if dtype.kind not in _KIND_NAMES:
            raise UserError(f"schema key {key!r} has dtype {dtype}; use a float, integer or bool dtype")
        specs[key] = KeySpec(shape, dtype)
    return specs


def schema_to_json(specs: dict[str, KeySpec]) -> dict:
    return {key: {"shape": list(spec.shape), "dtype": spec.dtype.str if spec.dtype.kind != "b" else "bool"}
            for key, spec in specs.items()}


def make_step_schema(obs_spec: dict[str, tuple], action_dim: int, *, images_as_uint8: bool = True) -> dict:
    """The standard schema: observation keys plus every action, flag and reward key of ARCHITECTURE.md.

    `obs_spec` maps observation names (`state`, `image_wrist`, ...) to `(shape, dtype)`.
    """
    schema: dict[str, tuple] = {}
    for name, (shape, dtype) in obs_spec.items():
        if images_as_uint8 and name.startswith("image"):
            dtype = "uint8"
        schema[f"obs/{name}"] = (tuple(shape), dtype)
    for key in ("action", "policy_action", "base_action", "residual_action", "human_action"):
        schema[key] = ((action_dim,), "float32")
    schema.update({
        "intervention": ((), "bool"),
        "reward": ((), "float32"),
        "terminated": ((), "bool"),
        "truncated": ((), "bool"),
        "timestamp": ((), "float64"),
    })
    return schema


def check_step(specs: dict[str, KeySpec], step: dict) -> dict[str, np.ndarray]:
    """Validate one step against the schema and return its values as arrays (cast on copy into the buffer).

    Raises UserError naming the first problem; nothing is buffered for a rejected step.
    """
    if not isinstance(step, dict):
        raise UserError(f"a step must be a dict {{key: value}}, got {type(step).__name__}")
    if len(step) != len(specs) or any(k not in specs for k in step):
        unknown = [k for k in step if k not in specs]
        if unknown:
            raise UserError(f"unknown step key {unknown[0]!r}; the store's keys are: {', '.join(specs)}")
        missing = [k for k in specs if k not in step]
        raise UserError(f"step is missing key {missing[0]!r}; every step must give all of: {', '.join(specs)}")
    out = {}
    for key, spec in specs.items():
        value = step[key]
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        if value.shape != spec.shape:
            raise UserError(f"step key {key!r} has shape {value.shape}, expected {spec.shape}")
        out[key] = value if value.dtype == spec.dtype and spec.dtype.kind not in "f" else _cast(key, value, spec)
    return out


def _cast(key: str, value: np.ndarray, spec: KeySpec) -> np.ndarray:
    kind, want = value.dtype.kind, spec.dtype.kind
    same_kind = kind == want or (kind in "iu" and want in "iu")
    if not same_kind:
        raise UserError(f"step key {key!r} has dtype {value.dtype}, expected {spec.dtype} "
                        f"(a {_KIND_NAMES.get(want, want)} value)")
    if want == "f":
        if not np.isfinite(value).all():
            if key in NULLABLE_KEYS and np.isnan(value).all():
                return value
            what = "NaN" if np.isnan(value).any() else "inf"
            hint = " (use all-NaN for 'no value')" if key in NULLABLE_KEYS else ""
            raise UserError(f"step key {key!r} contains {what}; only finite values are stored{hint}")
        return value
    if want in "iu" and value.size:
        info = np.iinfo(spec.dtype)
        if value.min() < info.min or value.max() > info.max:
            raise UserError(f"step key {key!r} has values outside the {spec.dtype} range [{info.min}, {info.max}]")
    return value


def check_episode_fields(fields: dict) -> dict:
    """Fill defaults and check the per-episode fields given to `end_episode`."""
    unknown = [k for k in fields if k not in EPISODE_FIELDS]
    if unknown:
        raise UserError(f"unknown episode field {unknown[0]!r}; the fields are: {', '.join(EPISODE_FIELDS)}")
    if fields.get("source") not in SOURCES:
        raise UserError(f"episode source must be one of {', '.join(SOURCES)}, got {fields.get('source')!r}")
    if not isinstance(fields.get("success"), bool | np.bool_):
        raise UserError(f"episode success must be a bool, got {fields.get('success')!r}")
    row = {}
    for name, (dtype, default) in EPISODE_FIELDS.items():
        value = fields.get(name, default)
        if dtype == "str":
            if not isinstance(value, str):
                raise UserError(f"episode field {name!r} must be a string, got {value!r}")
        elif dtype == "float64":
            value = float(value)
        elif dtype == "int64":
            value = int(value)
        else:
            value = bool(value)
        row[name] = value
    return row

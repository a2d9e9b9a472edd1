"""Task settings: `configs/task/<Task>.yaml` is the single source of truth, keyword arguments override it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.errors import SimError

TASK_DIR = Path(__file__).resolve().parents[1] / "configs" / "task"


@dataclass(frozen=True)
class TaskSettings:
    name: str
    max_steps: int  # episode time limit in control steps (truncation)
    control_hz: float = 20.0
    action_mode: str = "absolute"  # absolute | delta
    delta_scale: float = 0.1  # delta mode: normalized target change per step at |a| = 1
    cameras: tuple[str, ...] = ()  # cameras rendered into obs["image_<camera>"]
    image_size: tuple[int, int] = (84, 84)  # (height, width); an int means square
    robot_file: str | None = None  # a user's MJCF or URDF instead of the built-in arm (Reach only)
    joint_map: dict[str, str] = field(default_factory=dict)  # mirror joint name -> joint name in robot_file
    ee: str | None = None  # site or body of the user's robot whose position is the TCP


def task_names() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def load_settings(task: str, **overrides: Any) -> TaskSettings:
    """Settings of `task` from its YAML file; overrides whose value is None keep the file's value."""
    path = TASK_DIR / f"{task}.yaml"
    if not path.is_file():
        raise SimError(f"unknown task {task!r}; choose one of: {', '.join(task_names())}")
    values = {**(yaml.safe_load(path.read_text()) or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(TaskSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SimError(f"unknown task setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(known))}")
    size = values.get("image_size", 84)
    values["image_size"] = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    values["cameras"] = tuple(values.get("cameras") or ())
    values["joint_map"] = dict(values.get("joint_map") or {})
    settings = TaskSettings(**values)
    if settings.action_mode not in ("absolute", "delta"):
        raise SimError(f"action_mode={settings.action_mode!r} is not known; use absolute or delta")
    if settings.max_steps < 1 or settings.control_hz <= 0 or min(settings.image_size) < 1:
        raise SimError("max_steps, control_hz and image_size must be positive; fix the task settings")
    return settings

"""What a task adds to a mirror: objects and markers, a reset distribution, a sparse success test, object state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import mujoco
import numpy as np

from sim.kinematics import ArmMount


class Task:
    """Base of the four tasks. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]
    # (name prefix, arm kind from sim.scenes.ARM_JOINTS, mount) per arm, in action order
    arms: ClassVar[tuple[tuple[str, str, ArmMount], ...]]
    home_tcp: ClassVar[tuple[float, float, float]] = (0.25, 0.0, 0.2)  # the arms' resting TCP, in each arm frame
    objects: ClassVar[tuple[tuple[str, int], ...]]  # the task's part of the state vector: (name, size) in order
    focus: ClassVar[tuple[float, float, float]] = (0.25, 0.0, 0.05)  # where the world cameras look

    def objects_xml(self) -> str:
        """MJCF bodies and sites this task adds to the world."""
        raise NotImplementedError

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, spread: float,
              tcp: np.ndarray) -> None:
        """Place objects and goal markers; `tcp` holds each arm's TCP at its start pose (n_arms, 3)."""
        raise NotImplementedError

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """The task's part of the state vector, laid out as `objects`."""
        raise NotImplementedError

    def succeeded(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """The sparse success test on states given by their named parts (`robot.state_slices` of obs["state"], any
        leading batch shape): a bool array of that shape. A function of the state alone, so the mirror's steps and the
        states a learned dynamics model predicts (`robot_rl.eval.model_based`) are judged by one test."""
        raise NotImplementedError


def around(rng: np.random.Generator, center: float, half_width: float, spread: float) -> float:
    """center + U(-1, 1) * half_width * spread: the init_spread parameter scales every reset range through this."""
    return float(center + rng.uniform(-1.0, 1.0) * half_width * spread)


def place_free_body(model: mujoco.MjModel, data: mujoco.MjData, name: str, pos: np.ndarray, yaw: float) -> None:
    """Put a free body at `pos` with heading `yaw`, at rest."""
    joint = model.joint(name)
    adr, dof = joint.qposadr[0], joint.dofadr[0]
    data.qpos[adr:adr + 3] = pos
    data.qpos[adr + 3:adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
    data.qvel[dof:dof + 6] = 0.0


def free_body_pose(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> np.ndarray:
    """Position and (w, x, y, z) quaternion of a free body, 7 numbers."""
    adr = model.joint(name).qposadr[0]
    return data.qpos[adr:adr + 7].copy()

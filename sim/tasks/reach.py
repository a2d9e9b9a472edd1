"""Reach: bring the tool tip within 2 cm of a target point. The sanity task, and the one a user's robot can run."""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

from sim.expert import ScriptedExpert, arm_targets, servo
from sim.kinematics import ArmMount
from sim.tasks.base import Task

TOLERANCE = 0.02  # metres between TCP and target for success
TARGET_RANGE = np.array([0.08, 0.15, 0.08])  # half-widths of the target box around the start TCP (x, y, z)


class Reach(Task):
    name = "Reach"
    arms = (("", "pusher4", ArmMount()),)
    home_tcp = (0.25, 0.0, 0.2)
    objects = (("goal_pos", 3),)

    def objects_xml(self) -> str:
        return '<site name="target" pos="0.3 0 0.15" size="0.02" rgba="0.1 0.8 0.2 0.6"/>'

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, spread: float,
              tcp: np.ndarray) -> None:
        """The target lies in a box around the start TCP, so it is reachable for any arm, a user's included."""
        offset = rng.uniform(-1.0, 1.0, 3) * TARGET_RANGE * spread
        model.site("target").pos = tcp[0] + offset

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return model.site("target").pos.copy()

    def succeeded(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.linalg.norm(parts["tcp_pos"][..., :3] - parts["goal_pos"], axis=-1) < TOLERANCE  # the first arm


class ReachExpert(ScriptedExpert):
    """Moves the TCP straight to the target at a bounded lead."""

    task_class = Reach
    lead = 0.05

    def anchor(self, s: dict[str, np.ndarray]) -> np.ndarray:
        return s["tcp_pos"]

    def plan(self, s: dict[str, np.ndarray]) -> list[float]:
        _, kind, mount = self.task.arms[0]
        return arm_targets(kind, mount, servo(s["tcp_pos"], s["goal_pos"], self.lead))

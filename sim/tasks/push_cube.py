"""PushCube: a 4-joint arm with a round pusher pushes a 4 cm cube into a goal region of 4 cm radius."""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

from sim import scenes
from sim.expert import ScriptedExpert, arm_targets, servo
from sim.kinematics import ArmMount
from sim.tasks.base import Task, around, free_body_pose, place_free_body

HALF = 0.02  # cube half size
TOLERANCE = 0.04  # goal region radius (cube centre to goal centre, in the table plane)


class PushCube(Task):
    name = "PushCube"
    arms = (("", "pusher4", ArmMount()),)
    home_tcp = (0.25, 0.0, 0.2)
    objects = (("cube_pos", 3), ("cube_quat", 4), ("goal_pos", 3))

    def objects_xml(self) -> str:
        return (scenes.box_object("cube", (HALF, HALF, HALF), ".8 .2 .2 1", density=1000)
                + f'<site name="goal" type="cylinder" pos="0.3 0.1 0.001" size="{TOLERANCE} 0.001" '
                  'rgba=".1 .8 .2 .5"/>')

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, spread: float,
              tcp: np.ndarray) -> None:
        """Cube in front of the arm; goal 9-15 cm away in any direction, inside the region the pusher can work."""
        cube = np.array([around(rng, 0.32, 0.05, spread), around(rng, 0.0, 0.1, spread), HALF])
        place_free_body(model, data, "cube", cube, around(rng, 0.0, 0.5, spread))
        for _ in range(100):
            angle, dist = around(rng, 0.0, np.pi, spread), around(rng, 0.12, 0.03, spread)
            goal = cube[:2] + dist * np.array([np.cos(angle), np.sin(angle)])
            if 0.22 <= np.hypot(*goal) <= 0.42 and abs(goal[1]) <= 0.2:
                break
        model.site("goal").pos = (*goal, 0.001)

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return np.concatenate([free_body_pose(model, data, "cube"), model.site("goal").pos])

    def succeeded(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.linalg.norm(parts["cube_pos"][..., :2] - parts["goal_pos"][..., :2], axis=-1) < TOLERANCE


class PushCubeExpert(ScriptedExpert):
    """Gets behind the cube on the goal line at a safe height, lowers the pusher, and pushes along the line.

    Phases follow from the state alone: low behind the cube and on the line -> push; low behind but off the line ->
    back off toward the line; above the pre-push point -> descend; low elsewhere -> lift; otherwise travel.
    """

    task_class = PushCube
    safe_z, push_z = 0.08, 0.02
    pre = 0.065  # pre-push point behind the cube centre
    contact = 0.035  # pusher centre behind the cube centre when touching (half size + pusher radius)
    lead = 0.03

    def anchor(self, s: dict[str, np.ndarray]) -> np.ndarray:
        return s["cube_pos"]

    def plan(self, s: dict[str, np.ndarray]) -> list[float]:
        tcp, cube, goal = s["tcp_pos"], s["cube_pos"][:2], s["goal_pos"][:2]
        d = goal - cube
        dist = np.linalg.norm(d)
        d = d / max(dist, 1e-9)
        rel = tcp[:2] - cube
        along = rel @ d
        lateral = np.linalg.norm(rel - along * d)
        pre = cube - d * self.pre
        if tcp[2] < 0.045 and along < -0.028 and lateral < 0.03:
            xy = cube - d * (self.contact - min(self.lead, dist)) if lateral < 0.012 else pre
            z = self.push_z
        elif np.linalg.norm(tcp[:2] - pre) < 0.02:
            xy, z = pre, self.push_z
        elif tcp[2] < self.safe_z - 0.02:
            xy, z = tcp[:2], self.safe_z
        else:
            xy, z = pre, self.safe_z
        _, kind, mount = self.task.arms[0]
        return arm_targets(kind, mount, servo(tcp, np.array([*xy, z]), self.lead))

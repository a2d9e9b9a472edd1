"""PickPlace: a 5-joint arm with a parallel gripper picks a 4 cm cube and puts it down on a target of 3 cm radius."""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

from sim import scenes
from sim.expert import Grasp, ScriptedExpert, arm_targets, servo, wrist_for
from sim.kinematics import ArmMount, yaw_of
from sim.tasks.base import Task, around, free_body_pose, place_free_body

HALF = 0.02  # cube half size
TOLERANCE = 0.03  # target radius, cube centre to target centre in the table plane
RESTING = HALF + 0.005  # the cube counts as put down when its centre is this low


class PickPlace(Task):
    name = "PickPlace"
    arms = (("", "gripper5", ArmMount()),)
    home_tcp = (0.25, 0.0, 0.2)
    objects = (("cube_pos", 3), ("cube_quat", 4), ("goal_pos", 3))

    def objects_xml(self) -> str:
        return (scenes.box_object("cube", (HALF, HALF, HALF), ".8 .2 .2 1", density=800)
                + f'<site name="goal" type="cylinder" pos="0.3 0.1 0.001" size="{TOLERANCE} 0.001" '
                  'rgba=".1 .8 .2 .5"/>')

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, spread: float,
              tcp: np.ndarray) -> None:
        """Cube and target both in front of the arm, at least 10 cm apart."""
        cube = np.array([around(rng, 0.3, 0.05, spread), around(rng, 0.0, 0.12, spread), HALF])
        place_free_body(model, data, "cube", cube, around(rng, 0.0, 0.4, spread))
        for _ in range(100):
            goal = np.array([around(rng, 0.3, 0.06, spread), around(rng, 0.0, 0.15, spread)])
            if np.linalg.norm(goal - cube[:2]) >= 0.1:
                break
        model.site("goal").pos = (*goal, 0.001)

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return np.concatenate([free_body_pose(model, data, "cube"), model.site("goal").pos])

    def succeeded(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        cube, goal = parts["cube_pos"], parts["goal_pos"]
        return (np.linalg.norm(cube[..., :2] - goal[..., :2], axis=-1) < TOLERANCE) & (cube[..., 2] < RESTING)


class PickPlaceExpert(ScriptedExpert):
    """Above the cube with the gripper open -> descend -> close -> lift -> carry over the target -> put down.

    The phase follows from the state (see `Grasp.step`); a dropped cube is picked up again.
    """

    task_class = PickPlace
    grasp = Grasp(half_width=HALF, carry_z=0.1)
    place_z = HALF - 0.002  # cube height to aim for when putting down: slightly into the table
    lead = 0.03

    def anchor(self, s: dict[str, np.ndarray]) -> np.ndarray:
        return s["cube_pos"]

    def plan(self, s: dict[str, np.ndarray]) -> list[float]:
        _, kind, mount = self.task.arms[0]
        tcp, cube = s["tcp_pos"], s["cube_pos"]
        wrist = wrist_for(mount, cube, yaw_of(s["cube_quat"]), np.pi / 2)
        goal = np.array([*s["goal_pos"][:2], self.place_z])
        width = s["joint_pos"][-1]
        self.held[0] = self.grasp.holding(tcp, cube, width, s["joint_vel"][-1], self.held[0])
        cmd, grip = self.grasp.step(tcp, cube, width, self.held[0], goal)
        return arm_targets(kind, mount, servo(tcp, cmd, self.lead), wrist, grip)

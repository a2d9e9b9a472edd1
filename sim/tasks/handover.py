"""BimanualHandover: two 6-joint arms with grippers (14 action dimensions) hand a bar from one to the other.

The right arm (at y = -0.45) can reach the bar's start but not the target; the left arm (at y = +0.45) can reach the
target but not the start. The bar has to change hands above the middle of the table.
"""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

from sim import scenes
from sim.expert import Grasp, ScriptedExpert, arm_targets, servo, wrist_for
from sim.kinematics import ArmMount, axis_of
from sim.tasks.base import Task, around, free_body_pose, place_free_body

HALF = (0.1, 0.015, 0.015)  # bar half sizes: 20 cm long along its x axis, 3 cm square section
GRIP_OFFSET = 0.035  # each arm grasps the bar this far from its centre, on its own side
TOLERANCE = 0.04  # target radius, bar centre to target centre in the table plane
RESTING = HALF[2] + 0.005  # the bar counts as put down when its centre is this low
HANDOVER = np.array([0.0, 0.0, 0.15])  # where the bar's centre changes hands
LEFT, RIGHT = ArmMount((0.0, 0.45, 0.0), -np.pi / 2), ArmMount((0.0, -0.45, 0.0), np.pi / 2)


class BimanualHandover(Task):
    name = "BimanualHandover"
    arms = (("left_", "gripper6", LEFT), ("right_", "gripper6", RIGHT))
    home_tcp = (0.25, 0.0, 0.2)
    objects = (("bar_pos", 3), ("bar_quat", 4), ("goal_pos", 3))
    focus = (0.0, 0.0, 0.05)

    def objects_xml(self) -> str:
        return (scenes.box_object("bar", HALF, ".2 .3 .8 1", density=200)
                + f'<site name="goal" type="cylinder" pos="0 0.17 0.001" size="{TOLERANCE} 0.001" '
                  'rgba=".1 .8 .2 .5"/>')

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, spread: float,
              tcp: np.ndarray) -> None:
        """Bar on the right arm's side, lying along the line between the arms; target on the left arm's side."""
        bar = np.array([around(rng, 0.0, 0.06, spread), around(rng, -0.17, 0.03, spread), HALF[2]])
        place_free_body(model, data, "bar", bar, np.pi / 2 + around(rng, 0.0, 0.3, spread))
        model.site("goal").pos = (around(rng, 0.0, 0.06, spread), around(rng, 0.17, 0.03, spread), 0.001)

    def object_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        return np.concatenate([free_body_pose(model, data, "bar"), model.site("goal").pos])

    def succeeded(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        bar, goal = parts["bar_pos"], parts["goal_pos"]
        return (np.linalg.norm(bar[..., :2] - goal[..., :2], axis=-1) < TOLERANCE) & (bar[..., 2] < RESTING)


class BimanualHandoverExpert(ScriptedExpert):
    """Right arm: pick the bar at its right end and bring it to the handover point; release once the left holds it,
    then go home. Left arm: wait above the handover point; grasp the left end once the bar is there; carry it to the
    target once the right has let go, and put it down. Each arm's phase follows from the state.
    """

    task_class = BimanualHandover
    right_grasp = Grasp(half_width=HALF[1], carry_z=HANDOVER[2])
    left_grasp = Grasp(half_width=HALF[1], carry_z=HANDOVER[2], clearance=0.06)
    place_z = HALF[2] - 0.002
    lead = 0.03

    def anchor(self, s: dict[str, np.ndarray]) -> np.ndarray:
        return s["bar_pos"]

    def plan(self, s: dict[str, np.ndarray]) -> list[float]:
        bar, goal = s["bar_pos"], s["goal_pos"]
        axis = axis_of(s["bar_quat"])
        axis = axis if axis[1] >= 0 else -axis  # pointing from the right arm's end to the left arm's end
        left_point, right_point = bar + GRIP_OFFSET * axis, bar - GRIP_OFFSET * axis
        grip_yaw = np.arctan2(axis[1], axis[0]) + np.pi / 2  # fingers close across the bar
        q, dq, tcp = s["joint_pos"], s["joint_vel"], s["tcp_pos"]
        left_tcp, right_tcp = tcp[:3], tcp[3:]
        left_width, right_width, left_speed, right_speed = q[6], q[13], dq[6], dq[13]
        left_holds = self.left_grasp.holding(left_tcp, left_point, left_width, left_speed, self.held[0])
        right_holds = self.right_grasp.holding(right_tcp, right_point, right_width, right_speed, self.held[1])
        self.held = [left_holds, right_holds]
        handover_right = HANDOVER - GRIP_OFFSET * np.array([0.0, 1.0, 0.0])
        handover_left = HANDOVER + GRIP_OFFSET * np.array([0.0, 1.0, 0.0])
        home = [mount.to_world(self.task.home_tcp) for mount in (LEFT, RIGHT)]

        # right arm: pick and present, release when the left holds, then go home
        if left_holds:
            opened = right_width > self.right_grasp.open_width - 0.005
            right_cmd = (home[1] if opened else handover_right), self.right_grasp.open_width
        else:
            right_cmd = self.right_grasp.step(right_tcp, right_point, right_width, right_holds, handover_right)

        # left arm: wait above the handover point, grasp there, carry to the target once the right has let go
        bar_presented = right_holds and np.linalg.norm(right_point - handover_right) < 0.02
        if left_holds and right_holds:
            left_cmd = left_point, self.left_grasp.closed_width
        elif left_holds or bar_presented:
            target = np.array([*(goal[:2] + GRIP_OFFSET * axis[:2]), self.place_z])
            left_cmd = self.left_grasp.step(left_tcp, left_point, left_width, left_holds, target)
        else:
            left_cmd = handover_left + np.array([0.0, 0.0, 0.1]), self.left_grasp.open_width

        targets = []
        for (_, kind, mount), tcp_now, (cmd, grip), point in (
                (self.task.arms[0], left_tcp, left_cmd, left_point), (self.task.arms[1], right_tcp, right_cmd,
                                                                      right_point)):
            wrist = wrist_for(mount, point, grip_yaw, np.pi)
            targets += arm_targets(kind, mount, servo(tcp_now, np.asarray(cmd, dtype=float), self.lead), wrist, grip)
        return targets

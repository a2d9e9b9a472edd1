"""Scripted experts: state-driven Cartesian plans turned into joint targets by closed-form IK.

Every expert reads only obs["state"], keeps the hand pointing down, and moves the tool centre point (TCP) toward the
goal of its current phase by at most `lead` metres per command (a servo on the measured TCP). The phase is a function
of the state (where the object is, how far the gripper is closed), so the same state always gives the same action:
smooth, consistent demonstrations that a behaviour-cloning policy can learn.

Quality knobs: `noise` is the std of Gaussian noise added to every normalized action; `fail_prob` is the chance that
an episode is a failure: the expert then aims at a goal displaced sideways by 10-15 cm and almost surely fails.
`reset(missing=True)` makes it aim 2.5-4 cm beside the object instead (a missed grasp, a push from the wrong point):
with `reset(failing=True)`, the detours that recovery demos start from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim import scenes
from sim.kinematics import ArmMount, ik_down, wrap
from sim.robot import state_layout
from sim.settings import load_settings

if TYPE_CHECKING:
    from sim.tasks.base import Task


def servo(tcp: np.ndarray, goal: np.ndarray, lead: float) -> np.ndarray:
    """The point at most `lead` metres from the measured TCP toward the goal."""
    step = np.asarray(goal, dtype=float) - tcp
    norm = np.linalg.norm(step)
    return goal if norm <= lead else tcp + step * (lead / norm)


def wrist_for(mount: ArmMount, point: np.ndarray, grip_yaw: float, period: float) -> float:
    """Wrist rotation that closes the fingers along world yaw `grip_yaw` (modulo `period`) at `point`.

    With the hand down, the fingers close along (waist yaw + pi/2 - wrist_rotate). The waist yaw is taken at the
    object, not at the TCP, so the wrist does not turn while the arm travels toward it.
    """
    local = mount.to_arm(point)
    return wrap(mount.yaw + np.arctan2(local[1], local[0]) + np.pi / 2 - grip_yaw, period)


def arm_targets(kind: str, mount: ArmMount, tcp: np.ndarray, wrist_rotate: float = 0.0,
                gripper: float = 0.0) -> list[float]:
    """Joint targets of one arm, in ARM_JOINTS order, that put its TCP at `tcp` (world) with the hand down."""
    q = dict(zip(("waist", "shoulder", "elbow", "wrist_angle"), ik_down(scenes.geometry(kind), mount.to_arm(tcp))))
    q.update(forearm_roll=0.0, wrist_rotate=wrist_rotate, gripper=gripper)
    return [float(q[j]) for j in scenes.ARM_JOINTS[kind]]


@dataclass(frozen=True)
class Grasp:
    """How a gripper expert handles one object: its half width across the fingers and the heights it moves at."""

    half_width: float  # the object's half width across the fingers
    carry_z: float = 0.1  # height of the grasp point while carrying
    clearance: float = 0.08  # TCP height above the grasp point while travelling to it with the gripper open
    open_width: float = scenes.JOINTS["gripper"][0][1]
    closed_width: float = scenes.JOINTS["gripper"][0][0]

    def holding(self, tcp: np.ndarray, point: np.ndarray, width: float, speed: float, held: bool) -> bool:
        """The grasp point is between closed fingers. Entering needs fingers that have stopped on the object;
        staying (`held`: it was holding one step ago) tolerates the jolts of lifting and of a handover."""
        if held:
            return bool(np.linalg.norm(tcp - point) < 0.03
                        and self.half_width - 0.008 < width < self.half_width + 0.005)
        return bool(np.linalg.norm(tcp[:2] - point[:2]) < 0.02 and abs(tcp[2] - point[2]) < 0.02
                    and self.half_width - 0.006 < width < self.half_width + 0.0005 and abs(speed) < 0.03)

    def step(self, tcp: np.ndarray, point: np.ndarray, width: float, holding: bool, goal: np.ndarray
             ) -> tuple[np.ndarray, float]:
        """One step of pick-and-carry: (TCP goal, finger target) from where the TCP, grasp point and fingers are.

        Holding: lift to carry_z, carry over `goal` (x, y), then move the grasp point to goal's height. At the grasp
        point with fingers still open: close. Otherwise: open, go above the grasp point, descend once open.
        """
        if holding:
            if np.linalg.norm(point[:2] - goal[:2]) < 0.015:
                move = goal - point
            elif point[2] < self.carry_z - 0.03:
                move = np.array([0.0, 0.0, self.carry_z - point[2]])
            else:
                move = np.array([*(goal[:2] - point[:2]), self.carry_z - point[2]])
            return tcp + move, self.closed_width
        offset = np.linalg.norm(tcp[:2] - point[:2])
        if offset < 0.015 and abs(tcp[2] - point[2]) < 0.012 and width > self.half_width - 0.006:
            return point, self.closed_width  # at the grasp point: close
        if offset < 0.02:  # above: descend once the fingers are open
            return (point if width > self.open_width - 0.005 else np.array([*point[:2], tcp[2]])), self.open_width
        travel_z = point[2] + self.clearance
        if tcp[2] < travel_z - 0.02:  # low and away from the grasp point: lift first
            return np.array([*tcp[:2], travel_z]), self.open_width
        return np.array([*point[:2], travel_z]), self.open_width


class ScriptedExpert:
    """Base of the experts: subclasses implement `plan(state) -> joint targets` and `anchor(state)`."""

    task_class: type[Task]

    def __init__(self, noise: float = 0.0, fail_prob: float = 0.0, seed: int | None = None,
                 action_mode: str | None = None) -> None:
        self.task = self.task_class()
        settings = load_settings(self.task.name, action_mode=action_mode)
        self.noise, self.fail_prob = float(noise), float(fail_prob)
        self.action_mode, self.delta_scale = settings.action_mode, settings.delta_scale
        self.rng = np.random.default_rng(seed)
        joints = [j for _, kind, _ in self.task.arms for j in scenes.ARM_JOINTS[kind]]
        self.low, self.high = np.array([scenes.JOINTS[j][0] for j in joints]).T
        layout = state_layout(len(joints), len(self.task.arms), self.task.objects)
        ends = np.cumsum([size for _, size in layout])
        self.slices = {name: slice(end - size, end) for (name, size), end in zip(layout, ends)}
        self.reset()

    def reset(self, failing: bool | None = None, missing: bool = False) -> None:
        """Start a new episode: draw whether it fails (or take `failing`: aim at a wrong goal this episode); with
        `missing`, aim beside the object this episode; forget the last delta-mode target and what was held."""
        drawn = bool(self.rng.random() < self.fail_prob)  # drawn even when forced: the random stream stays the same
        self.failing = drawn if failing is None else failing
        self.missing = missing
        self.held = [False] * len(self.task.arms)
        self._shift: np.ndarray | None = None
        self._miss: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self.proposal: np.ndarray | None = None  # the last action without the noise (set by `act`)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The normalized action for this observation (absolute or delta, like the env it drives), with the
        expert's `noise`. `proposal` then holds the same action without the noise: what the expert meant, the label
        that teaches a policy to recover from the states the noise drove it into (DART)."""
        s = {name: np.asarray(obs["state"][sl], dtype=float) for name, sl in self.slices.items()}
        if self.failing:
            s["goal_pos"] = s["goal_pos"] + self._failure_shift(s)
        if self.missing:
            key = self.task.objects[0][0]
            s[key] = s[key] + self._miss_shift()
        q = np.asarray(self.plan(s))
        clean = np.clip(2.0 * (q - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)
        target = clean
        if self.noise > 0:
            target = np.clip(clean + self.rng.normal(0.0, self.noise, clean.shape), -1.0, 1.0)
        if self.action_mode == "absolute":
            self.proposal = clean.astype(np.float32)
            return target.astype(np.float32)
        if self._target is None:
            self._target = 2.0 * (s["joint_pos"] - self.low) / (self.high - self.low) - 1.0
        self.proposal = np.clip((clean - self._target) / self.delta_scale, -1.0, 1.0).astype(np.float32)
        delta = np.clip((target - self._target) / self.delta_scale, -1.0, 1.0)
        self._target = np.clip(self._target + self.delta_scale * delta, -1.0, 1.0)
        return delta.astype(np.float32)

    def _failure_shift(self, s: dict[str, np.ndarray]) -> np.ndarray:
        """A goal displacement perpendicular to the anchor -> goal line, drawn once per failing episode."""
        if self._shift is None:
            d = s["goal_pos"][:2] - self.anchor(s)[:2]
            side = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9) * self.rng.choice([-1.0, 1.0])
            self._shift = np.array([*side * self.rng.uniform(0.10, 0.15), 0.0])
        return self._shift

    def _miss_shift(self) -> np.ndarray:
        """A horizontal displacement of the task's first object (Reach: its goal marker) as the expert sees it,
        2.5-4 cm in a random direction, drawn once per missing episode: it grasps or pushes beside the object."""
        if self._miss is None:
            angle = self.rng.uniform(0.0, 2.0 * np.pi)
            self._miss = np.array([np.cos(angle), np.sin(angle), 0.0]) * self.rng.uniform(0.025, 0.04)
        return self._miss

    def anchor(self, s: dict[str, np.ndarray]) -> np.ndarray:
        """What the task moves to the goal (the TCP or the object)."""
        raise NotImplementedError

    def plan(self, s: dict[str, np.ndarray]) -> list[float]:
        """Joint targets (radians and metres, action order) for the state `s` split by name."""
        raise NotImplementedError

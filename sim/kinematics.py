"""Analytic kinematics of the mirrors' arms: scripted experts plan in Cartesian space and command joint targets.

Every built-in arm has the same chain: `waist` (yaw about z), `shoulder`, `elbow` (pitch), an optional
`forearm_roll`, `wrist_angle` (pitch), an optional `wrist_rotate` (roll about the hand axis), then a tool whose centre
point (TCP) lies `hand` metres along the hand axis. In the zero pose every link points along +x of the arm frame and a
positive pitch raises the link. The experts keep the hand pointing straight down, which makes IK closed-form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmGeometry:
    """Link lengths in metres; shared by the MJCF builder and the experts, so both describe one arm."""

    shoulder_height: float = 0.12  # shoulder pitch axis above the base
    upper: float = 0.25  # shoulder -> elbow
    fore: float = 0.25  # elbow -> wrist
    hand: float = 0.08  # wrist pitch axis -> tool centre point


@dataclass(frozen=True)
class ArmMount:
    """Where an arm's base sits in the world: position of the base and yaw of its +x axis."""

    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0

    def to_arm(self, point: np.ndarray) -> np.ndarray:
        """World point -> arm frame."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = np.asarray(point, dtype=float) - np.asarray(self.pos)
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])

    def to_world(self, point: np.ndarray) -> np.ndarray:
        """Arm-frame point -> world."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        x, y, z = point
        return np.array([c * x - s * y, s * x + c * y, z]) + np.asarray(self.pos)

    def quat(self) -> tuple[float, float, float, float]:
        return (float(np.cos(self.yaw / 2)), 0.0, 0.0, float(np.sin(self.yaw / 2)))


def tcp_position(geom: ArmGeometry, waist: float, shoulder: float, elbow: float, wrist_angle: float) -> np.ndarray:
    """Forward kinematics of the TCP in the arm frame (forearm roll at zero)."""
    a1, a2, a3 = shoulder, shoulder + elbow, shoulder + elbow + wrist_angle
    r = geom.upper * np.cos(a1) + geom.fore * np.cos(a2) + geom.hand * np.cos(a3)
    z = geom.shoulder_height + geom.upper * np.sin(a1) + geom.fore * np.sin(a2) + geom.hand * np.sin(a3)
    return np.array([r * np.cos(waist), r * np.sin(waist), z])


def ik_down(geom: ArmGeometry, tcp: np.ndarray) -> np.ndarray:
    """Joint angles (waist, shoulder, elbow, wrist_angle) that put the TCP at `tcp` (arm frame), hand pointing down.

    Elbow-up solution; a point out of reach is projected onto the reachable sphere, so the result is always finite.
    """
    x, y, z = tcp
    waist = np.arctan2(y, x)
    px = np.hypot(x, y)
    pz = z + geom.hand - geom.shoulder_height
    l1, l2 = geom.upper, geom.fore
    cos_elbow = np.clip((px * px + pz * pz - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
    elbow = -np.arccos(cos_elbow)
    shoulder = np.arctan2(pz, px) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
    wrist_angle = -np.pi / 2 - shoulder - elbow
    return np.array([waist, shoulder, elbow, wrist_angle])


def wrap(angle: float, period: float) -> float:
    """Wrap an angle into [-period/2, period/2): a parallel gripper grasps a square section every quarter turn and
    a bar every half turn, so the wrist takes the smallest turn that matches."""
    return float((angle + period / 2) % period - period / 2)


def yaw_of(quat: np.ndarray) -> float:
    """Yaw (rotation about world z) of the body's x axis from a MuJoCo (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def axis_of(quat: np.ndarray) -> np.ndarray:
    """The body's x axis in the world from a (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return np.array([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)])

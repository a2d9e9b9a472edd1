"""Forward kinematics for the safety node's optional workspace box (`workspace_fk: module:function`).

A workspace function maps a joint position vector (the safety node's `joint_names` order) to the points that must
stay inside the box, shape (k, 3) or (3,). A real robot gives its own (e.g. from its URDF); the mirrors' arms are
analytic (`sim.kinematics`), so these two cover them: q = (waist, shoulder, elbow, wrist_angle, ...), TCP in the
arm's base frame.
"""

from __future__ import annotations

import numpy as np


def _tcp(kind: str, q: np.ndarray) -> np.ndarray:
    from sim.kinematics import tcp_position
    from sim.scenes import geometry
    return tcp_position(geometry(kind), *np.asarray(q, dtype=np.float64)[:4])


def pusher_tcp(q: np.ndarray) -> np.ndarray:
    """The 4-joint pusher arm of PushCube / Reach."""
    return _tcp("pusher4", q)


def gripper_tcp(q: np.ndarray) -> np.ndarray:
    """The 5-joint gripper arm (forearm roll absent); joints after wrist_angle do not move the TCP."""
    return _tcp("gripper5", q)

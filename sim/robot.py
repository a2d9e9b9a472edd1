"""The robot interface of a mirror, and loading a user's own robot (MJCF or URDF) with a joint-name map.

The interface is what a real driver exposes: joint names, action and observation specs, control rate and cameras.
The ROS 2 sim-mirror node publishes from it, so a policy sees the same names and shapes on the mirror and the robot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from sim.errors import SimError

USER_PREFIX = "robot/"  # names of a user's robot inside the mirror's model; never shown to users
ADDED_SERVO = "mirror_servo_"  # name prefix of the servos the mirror adds to mapped joints without one
SERVO_BANDWIDTH = 30.0  # rad/s: natural frequency of an added servo, critically damped


@dataclass(frozen=True)
class RobotInterface:
    """A mirror's interface. Actions are joint position targets normalized to [-1, 1] over each joint's range."""

    name: str
    joint_names: tuple[str, ...]  # controlled joints, in action order
    joint_ranges: tuple[tuple[float, float], ...]  # (low, high) per joint, radians or metres
    action_mode: str  # "absolute": a maps to a target in the range; "delta": a moves the last target
    delta_scale: float  # in delta mode, the target moves by delta_scale * a (normalized units) per step
    control_hz: float
    cameras: tuple[str, ...]  # every camera of the scene
    state_layout: tuple[tuple[str, int], ...]  # named segments of obs["state"], in order
    obs_spec: dict[str, tuple[tuple[int, ...], str]]  # obs key -> (shape, dtype) of this env's observations

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    @property
    def state_slices(self) -> dict[str, slice]:
        slices, start = {}, 0
        for name, size in self.state_layout:
            slices[name] = slice(start, start + size)
            start += size
        return slices

    def normalize(self, positions: np.ndarray) -> np.ndarray:
        """Joint positions -> normalized [-1, 1] units (unclipped)."""
        low, high = np.asarray(self.joint_ranges).T
        return 2.0 * (np.asarray(positions) - low) / (high - low) - 1.0

    def denormalize(self, action: np.ndarray) -> np.ndarray:
        """Normalized [-1, 1] units -> joint positions."""
        low, high = np.asarray(self.joint_ranges).T
        return low + (np.asarray(action) + 1.0) * 0.5 * (high - low)


def state_layout(n_joints: int, n_tcp: int, objects: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """Layout of obs["state"]: joint positions, joint velocities, TCP positions, then the task's objects."""
    return (("joint_pos", n_joints), ("joint_vel", n_joints), ("tcp_pos", 3 * n_tcp), *objects)


def one_line(message: str) -> str:
    return " ".join(message.split())


def load_user_robot(spec: mujoco.MjSpec, path: str | Path, joint_map: Mapping[str, str]) -> None:
    """Attach the robot in `path` (MJCF or URDF) to `spec` and give every mapped joint a position servo.

    `joint_map` maps the mirror's joint names (what policies and topics use) to the names in the file. A mapped joint
    with a position actuator keeps it; one without gets a servo (tuned after compiling, see `tune_added_servos`);
    any other actuator is an error. Like the built-in arms (and most arm controllers), the robot's bodies get
    gravity compensation, except free bodies and bodies whose file sets their own.
    """
    path = Path(path)
    if not path.is_file():
        raise SimError(f"robot file {path} does not exist; give the path of an MJCF (.xml) or URDF (.urdf) file")
    try:
        robot = mujoco.MjSpec.from_file(str(path))
    except ValueError as exc:
        raise SimError(f"robot file {path} does not compile: {one_line(str(exc))}; fix the file") from None
    if not joint_map:
        raise SimError("a user robot needs a joint map (mirror name -> joint name in the file), e.g. "
                       "joint_map={shoulder: joint1}")
    names = {joint.name: joint for joint in robot.joints}
    for mirror_name, file_name in joint_map.items():
        joint = names.get(file_name)
        if joint is None:
            raise SimError(f"joint map names joint {file_name!r} (for {mirror_name!r}) which is not in {path}; "
                           f"its joints are: {', '.join(sorted(n for n in names if n)) or 'none'}")
        if joint.type not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
            raise SimError(f"joint {file_name!r} in {path} is not a hinge or slide joint; map only 1-DoF joints")
    driven = {a.target: a for a in robot.actuators if a.trntype == mujoco.mjtTrn.mjTRN_JOINT}
    for file_name in joint_map.values():
        actuator = driven.get(file_name)
        if actuator is None:
            actuator = robot.add_actuator(name=f"{ADDED_SERVO}{file_name}", target=file_name,
                                          trntype=mujoco.mjtTrn.mjTRN_JOINT)
            actuator.set_to_position(kp=1.0)
        elif not (actuator.biastype == mujoco.mjtBias.mjBIAS_AFFINE and actuator.gainprm[0] > 0
                  and np.isclose(actuator.biasprm[1], -actuator.gainprm[0])):
            raise SimError(f"joint {file_name!r} in {path} is driven by a non-position actuator; use a <position> "
                           f"actuator or none (the mirror then adds a servo)")
    for body in robot.bodies:
        if body.gravcomp == 0 and not any(j.type == mujoco.mjtJoint.mjJNT_FREE for j in body.joints):
            body.gravcomp = 1.0
    spec.attach(robot, prefix=USER_PREFIX, frame=spec.worldbody.add_frame())


def tune_added_servos(model: mujoco.MjModel) -> None:
    """Give every added servo the same critically damped response whatever the joint's inertia (at qpos0).

    A URDF carries no damping, and a stiff undamped servo on a light link is unstable at the physics step; here
    kp = I w^2 and kv = 2 I w with w = SERVO_BANDWIDTH, so every mapped joint settles in about 0.15 s.
    """
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    inertia = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, inertia)
    for i in range(model.nu):
        if model.actuator(i).name.startswith(USER_PREFIX + ADDED_SERVO):
            dof = model.jnt_dofadr[model.actuator_trnid[i, 0]]
            kp, kv = inertia[dof, dof] * SERVO_BANDWIDTH ** 2, 2.0 * inertia[dof, dof] * SERVO_BANDWIDTH
            model.actuator_gainprm[i, 0], model.actuator_biasprm[i, 1:3] = kp, (-kp, -kv)


def compile_spec(spec: mujoco.MjSpec, source: str) -> mujoco.MjModel:
    """Compile, turning MuJoCo's multi-line error into one line that names the source."""
    try:
        return spec.compile()
    except ValueError as exc:
        raise SimError(f"{source} does not compile: {one_line(str(exc))}; fix the file") from None

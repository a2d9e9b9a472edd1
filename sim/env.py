"""The mirror environment: a MuJoCo scene, a task, a robot interface and a domain variant behind the gymnasium API.

Control runs at a fixed rate: each step holds the action (normalized joint position targets) for
`1 / control_hz` seconds of physics substeps, after `latency` control steps of delay.
"""

from __future__ import annotations

import atexit
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium
import mujoco
import numpy as np

from sim import scenes
from sim.errors import SimError
from sim.expert import arm_targets
from sim.kinematics import ArmMount
from sim.robot import USER_PREFIX, RobotInterface, compile_spec, load_user_robot, state_layout, tune_added_servos
from sim.settings import TaskSettings, load_settings
from sim.tasks import TASKS
from sim.variants import PhysicsScaler, Variant, resolve_variant

JOINT_NOISE = 0.05  # half-width (rad) of the uniform start-pose noise on every arm joint, times init_spread

# Envs holding a renderer: closed at exit, because an OSMesa renderer freed during interpreter teardown raises.
_RENDERING: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [env.close() for env in list(_RENDERING)])


class MirrorEnv(gymnasium.Env):
    """One mirror. Observations: `state` (float32) and `image_<camera>` (uint8, H x W x 3) for requested cameras."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str = "Reach", variant: str | Mapping[str, Any] | Variant = "nominal",
                 render_mode: str | None = None, **settings: Any) -> None:
        self.settings: TaskSettings = load_settings(task, **settings)
        self.task = TASKS[task]()
        self.variant = resolve_variant(variant)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.settings.control_hz}
        self._build()
        self.current_variant = self.variant  # the parameters in force this episode (sampled if randomized)
        self._renderer: mujoco.Renderer | None = None
        self._pending: deque[np.ndarray] = deque()
        self._target = np.zeros(self.robot.action_dim)
        self._steps = 0

    # ---- construction -------------------------------------------------------------------------------------------
    def _build(self) -> None:
        s = self.settings
        user = s.robot_file is not None
        if user and self.task.name != "Reach":
            raise SimError(f"a user robot (robot_file) works with task Reach only, not {self.task.name}; "
                           f"use task=Reach")
        arms = () if user else self.task.arms
        scene = scenes.scene_xml(self.task.name, self.task.objects_xml(), arms, self.task.focus)
        spec = mujoco.MjSpec.from_string(scene)
        if user:
            load_user_robot(spec, s.robot_file, s.joint_map)
        self.model = compile_spec(spec, s.robot_file if user else f"the {self.task.name} scene")
        self.data = mujoco.MjData(self.model)
        period = 1.0 / s.control_hz
        self.substeps = max(1, round(period / self.model.opt.timestep))
        if user:
            tune_added_servos(self.model)
            file_names = [USER_PREFIX + name for name in s.joint_map.values()]
            names = tuple(s.joint_map)
            self._tcp_ids = [self._user_ee(s.ee)]
        else:
            file_names = [p + j for p, kind, _ in arms for j in scenes.ARM_JOINTS[kind]]
            names = tuple(file_names)
            self._tcp_ids = [("site", self.model.site(p + "tcp").id) for p, _, _ in arms]
        joints = [self.model.joint(n) for n in file_names]
        for name, joint in zip(names, joints):
            if not self.model.jnt_limited[joint.id]:
                raise SimError(f"joint {name!r} has no range; give it range=\"low high\" in {s.robot_file}")
        self._qpos_adr = np.array([j.qposadr[0] for j in joints])
        self._dof_adr = np.array([j.dofadr[0] for j in joints])
        self._act_ids = np.array([self._actuator_of(j.id) for j in joints])
        qpos_of = lambda name: self.model.joint(name).qposadr[0]
        self._mirror_adr = [(qpos_of(p + "gripper"), qpos_of(p + "gripper_mirror"))  # the coupled second finger
                            for p, kind, _ in arms if kind.startswith("gripper")]
        ranges = tuple((float(lo), float(hi)) for lo, hi in self.model.jnt_range[[j.id for j in joints]])
        self._home = self._home_pose(arms, ranges)
        self._cameras = {self.model.camera(i).name.removeprefix(USER_PREFIX): i for i in range(self.model.ncam)}
        unknown = [c for c in s.cameras if c not in self._cameras]
        if unknown:
            raise SimError(f"unknown camera(s) {', '.join(unknown)} for {self.task.name}; "
                           f"choose from: {', '.join(self._cameras)}")
        n = len(names)
        layout = state_layout(n, len(self._tcp_ids), self.task.objects)
        height, width = s.image_size
        obs_spec = {"state": ((sum(size for _, size in layout),), "float32")}
        obs_spec.update({f"image_{c}": ((height, width, 3), "uint8") for c in s.cameras})
        self.robot = RobotInterface(
            name=self.task.name, joint_names=names, joint_ranges=ranges, action_mode=s.action_mode,
            delta_scale=s.delta_scale, control_hz=s.control_hz, cameras=tuple(self._cameras), state_layout=layout,
            obs_spec=obs_spec)
        self._slices = self.robot.state_slices  # the named parts the task's success test reads
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (n,), np.float32)
        spaces = {"state": gymnasium.spaces.Box(-np.inf, np.inf, obs_spec["state"][0], np.float32)}
        spaces.update({f"image_{c}": gymnasium.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in s.cameras})
        self.observation_space = gymnasium.spaces.Dict(spaces)
        self._physics = PhysicsScaler(self.model)

    def _user_ee(self, ee: str | None) -> tuple[str, int]:
        if not ee:
            raise SimError("a user robot needs ee: the name of the site or body at its tool tip, e.g. ee=tool0")
        for kind in ("site", "body"):
            try:
                return kind, getattr(self.model, kind)(USER_PREFIX + ee).id
            except KeyError:
                continue
        raise SimError(f"ee {ee!r} is neither a site nor a body of {self.settings.robot_file}; name one of them")

    def _actuator_of(self, joint_id: int) -> int:
        for i in range(self.model.nu):
            if (self.model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
                    and self.model.actuator_trnid[i, 0] == joint_id):
                return i
        raise SimError(f"joint {self.model.joint(joint_id).name!r} has no actuator; add a <position> actuator")

    def _home_pose(self, arms: tuple, ranges: tuple) -> np.ndarray:
        """Start pose: TCP at the task's home point with the hand down and grippers open; qpos0 for a user robot."""
        if not arms:
            return np.clip(self.model.qpos0[self._qpos_adr], *np.array(ranges).T)
        home, opened = np.array(self.task.home_tcp), scenes.JOINTS["gripper"][0][1]
        return np.array([q for _, kind, _ in arms for q in arm_targets(kind, ArmMount(), home, gripper=opened)])

    # ---- gymnasium API --------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        variant = self.variant.sample(rng) if self.variant.randomized else self.variant
        self.current_variant = variant
        mujoco.mj_resetData(self.model, self.data)
        self._physics.apply(self.model, self.data, variant)
        spread = variant.init_spread
        low, high = np.array(self.robot.joint_ranges).T
        q = self._home + rng.uniform(-1.0, 1.0, self._home.shape) * JOINT_NOISE * spread
        q = np.clip(q, low, high)
        for i, name in enumerate(self.robot.joint_names):
            if name.endswith("gripper"):
                q[i] = self._home[i]  # grippers start fully open
        self.data.qpos[self._qpos_adr] = q
        for grip, mirror in self._mirror_adr:
            self.data.qpos[mirror] = self.data.qpos[grip]
        mujoco.mj_kinematics(self.model, self.data)
        self.task.reset(self.model, self.data, rng, spread, self._tcp())
        self.data.ctrl[self._act_ids] = q
        mujoco.mj_forward(self.model, self.data)
        hold = self.robot.normalize(q)
        self._target = hold
        self._pending = deque([hold if self.robot.action_mode == "absolute" else np.zeros_like(hold)]
                              * int(variant.latency))
        self._steps = 0
        return self._obs(), {"variant": variant.params(), "is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.robot.action_dim,):
            raise SimError(f"action has shape {action.shape}, {self.task.name} expects ({self.robot.action_dim},): "
                           f"one normalized target per joint of {', '.join(self.robot.joint_names)}")
        if not np.all(np.isfinite(action)):
            raise SimError(f"action contains NaN or inf: {np.round(action, 3).tolist()}; send finite values in "
                           f"[-1, 1]")
        self._pending.append(np.clip(action, -1.0, 1.0))
        applied = self._pending.popleft()
        if self.robot.action_mode == "absolute":
            self._target = applied
        else:
            self._target = np.clip(self._target + self.robot.delta_scale * applied, -1.0, 1.0)
        self.data.ctrl[self._act_ids] = self.robot.denormalize(self._target)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self._steps += 1
        state = self.state()
        success = bool(self.task.succeeded({name: state[s] for name, s in self._slices.items()}))
        truncated = not success and self._steps >= self.settings.max_steps
        return self._obs(state), float(success), success, truncated, {"is_success": success}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._image(self.settings.cameras[0] if self.settings.cameras else "front")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- observations -------------------------------------------------------------------------------------------
    def _tcp(self) -> np.ndarray:
        return np.array([self.data.site_xpos[i] if kind == "site" else self.data.xpos[i] for kind, i in self._tcp_ids])

    def state(self) -> np.ndarray:
        """The noiseless state vector, laid out as `robot.state_layout`."""
        parts = [self.data.qpos[self._qpos_adr], self.data.qvel[self._dof_adr], self._tcp().ravel(),
                 self.task.object_state(self.model, self.data)]
        return np.concatenate(parts).astype(np.float32)

    def _obs(self, state: np.ndarray | None = None) -> dict[str, np.ndarray]:
        state = self.state() if state is None else state
        noise = self.current_variant.obs_noise
        if noise > 0:
            state = (state + self.np_random.normal(0.0, noise, state.shape)).astype(np.float32)
        obs = {"state": state}
        for camera in self.settings.cameras:
            obs[f"image_{camera}"] = self._image(camera)
        return obs

    def _image(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            height, width = self.settings.image_size
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
            self._renderer = mujoco.Renderer(self.model, height, width)
            _RENDERING.add(self)
        self._renderer.update_scene(self.data, camera=self._cameras[camera])
        return self._renderer.render()

"""The `teleop` node: a person (or, in simulation, the mirror's scripted expert) takes over from the policy.

It publishes `/teleop/intervention` (true while someone drives), `/teleop/command` (absolute joint targets, sent
only during a takeover) and episode events. The safety node does the rest: it passes teleop commands only while
intervention is on, anchors them bumplessly at the robot's position, and holds (latched) when a takeover's commands
stop, until an explicit `start` event. Backends (`backend` parameter):

- `gamepad`, `spacemouse`, `keyboard` (`hw.teleop_devices`): jog devices. Input beyond `deadzone` starts a takeover
  (HIL-SERL: an intervention is a non-zero teleop input); the target starts at the measured joint positions and
  integrates `jog_speed * axis` per second on the joint each axis drives (`axis_joints`); after `release_after_s`
  without input the policy gets the robot back. Buttons map to episode events (`buttons`: "BUTTON:event").
- `leader`: a leader arm's JointState topic (`leader_topic`): moving it more than `leader_motion` per tick takes
  over, its positions are the command (the safety node removes the offset between the arms), `release_after_s`
  of stillness hands back.
- `scripted` (simulation and tests): the task's scripted expert watches every observation and the policy's
  proposals (`/robot_rl/policy_info`); it takes over when the proposal drifts from what it would do
  (`drift_threshold` for `drift_patience` steps) or `takeover_after_steps` into an episode, and hands back after
  `takeover_steps` (0: at the episode's end).

A device that disappears mid-takeover (unplugged, leader silent for `lost_after_s`) stops the commands but not the
intervention, so the robot holds; only an episode `start` event (the operator's decision) gives it back to the
policy. The first command of every takeover is the measured position: nothing jumps when a person grabs the robot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from hw.msgs import Bool, Float64MultiArray, JointState, String, float64_array
from hw.node import Node
from hw.nodes.status import StatusReporter
from hw.observation import JointLimits, Observation, ObservationAssembler
from hw.policy_info import PolicyInfo
from hw.teleop_devices import StreamDevice, open_device
from hw.topics import (
    EPISODE,
    EPISODE_EVENTS,
    JOINT_STATES,
    POLICY_INFO,
    TASK_STATE,
    TELEOP_COMMAND,
    TELEOP_INTERVENTION,
    event_message,
    parse_event,
)
from hw.transport import LATEST, RELIABLE, SENSOR_DATA, NodeHandle
from robot_rl.errors import UserError

BACKENDS = ("scripted", "gamepad", "spacemouse", "keyboard", "leader")


@dataclass(frozen=True)
class TeleopParams:
    joint_names: tuple[str, ...]
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    backend: str = "scripted"
    rate_hz: float = 20.0  # device polling and command rate
    release_after_s: float = 1.0
    # jog devices
    device: str = ""  # /dev/input/eventN (gamepad), /dev/hidrawN (spacemouse); keyboard: empty = this terminal
    jog_speed: float = 0.5  # rad/s (robot units/s) at full deflection
    deadzone: float = 0.1
    axis_joints: tuple[int, ...] = ()  # the joint each device axis drives; default axis i -> joint i
    axis_range: float = 32767.0  # gamepad: raw value at full deflection
    six_axis: bool = False  # spacemouse: report 1 carries all six axes
    buttons: tuple[str, ...] = ("BTN_START:start", "BTN_SOUTH:success", "BTN_EAST:failure", "BTN_WEST:abort",
                                "KEY_1:start", "KEY_2:success", "KEY_3:failure", "KEY_0:abort")
    # leader arm
    leader_topic: str = "/leader/joint_states"
    leader_joint_names: tuple[str, ...] = ()  # the leader's names for joint_names, in order; default the same
    leader_motion: float = 0.01  # robot units per tick that count as a person moving the leader
    lost_after_s: float = 0.5
    # scripted
    task: str = ""
    task_state: bool = True
    expert_noise: float = 0.0
    expert_fail_prob: float = 0.0
    drift_threshold: float = 0.3  # max |proposal - expert| over joints, normalized units
    drift_patience: int = 3
    takeover_after_steps: int = 0
    takeover_steps: int = 0
    seed: int = 0
    status_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {BACKENDS}")
        for pair in self.buttons:
            if pair.count(":") != 1 or pair.split(":")[1] not in EPISODE_EVENTS:
                raise ValueError(f"button mapping {pair!r} must be BUTTON:event with an event of {EPISODE_EVENTS}")


class TeleopNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.p = p = self.declare(TeleopParams)
        self.limits = JointLimits.of(p.joint_names, p.position_lower, p.position_upper)
        self.n = self.limits.n
        self.counts: Counter[str] = Counter()
        self.period = 1.0 / p.rate_hz
        self.button_events = dict(pair.split(":") for pair in p.buttons)
        self.intervening = self.device_lost = self.took_over = False
        self.q: np.ndarray | None = None  # measured joint positions
        self.target: np.ndarray | None = None
        self.last_active = -np.inf
        self.episode_steps = self.takeover_ticks = self.drift_count = 0
        self.expert_actions: dict[float, np.ndarray] = {}
        self.pressed: frozenset[str] = frozenset()
        self.device: StreamDevice | None = None
        self.leader_q: np.ndarray | None = None
        self.leader_prev: np.ndarray | None = None
        self.leader_t = -np.inf

        self.command_pub = self.publisher(TELEOP_COMMAND, Float64MultiArray, LATEST)
        self.intervention_pub = self.publisher(TELEOP_INTERVENTION, Bool, RELIABLE)
        self.episode_pub = self.publisher(EPISODE, String, RELIABLE)
        self.status = StatusReporter(self, self._status, p.status_period_s)
        self.subscribe(EPISODE, String, self._on_episode, RELIABLE)
        scripted = p.backend == "scripted"
        self.assembler = ObservationAssembler(p.joint_names, task_state=scripted and p.task_state)
        if scripted:
            self.expert = self._expert()
            self.subscribe(POLICY_INFO, Float64MultiArray, self._on_policy_info, RELIABLE)
            if p.task_state:
                self.subscribe(TASK_STATE, JointState, lambda m: self._on_obs(self.assembler.on_task_state(m)),
                               SENSOR_DATA)
        elif p.backend == "leader":
            self.leader_names = tuple(p.leader_joint_names or p.joint_names)
            if len(self.leader_names) != self.n:
                raise UserError(f"node {self.name!r}: leader_joint_names needs {self.n} names, one per joint")
            self.subscribe(p.leader_topic, JointState, self._on_leader, SENSOR_DATA)
        else:
            self.device = self._open_device()
        self.subscribe(JOINT_STATES, JointState, lambda m: self._on_obs(self.assembler.on_joint_state(m)),
                       SENSOR_DATA)
        if not scripted:
            self.timer(self.period, self._poll)

    def _expert(self):
        import sim

        if not self.p.task:
            raise UserError(f"node {self.name!r}: the scripted backend needs the task parameter (e.g. PushCube)")
        try:
            return sim.make_expert(self.p.task, self.p.expert_noise, self.p.expert_fail_prob, seed=self.p.seed)
        except sim.SimError as exc:
            raise UserError(f"node {self.name!r}: {exc}") from exc

    def _open_device(self) -> StreamDevice | None:
        try:
            return open_device(self.p.backend, self.p.device, self.p.axis_range, self.p.six_axis)
        except OSError as exc:
            raise UserError(f"node {self.name!r}: cannot open {self.p.backend} device {self.p.device!r} ({exc}); "
                            "check the path and its permissions (udev rule or the input group)") from exc

    # -- takeover ----------------------------------------------------------------------------------------------------
    def _take_over(self, reason: str) -> None:
        if self.q is None:
            return  # nothing measured yet: there is no position to start from
        self.intervening = self.took_over = True
        self.takeover_ticks = self.drift_count = 0
        self.target = self.q.copy()
        self.last_active = self.now()
        self.counts[f"takeovers_{reason}"] += 1
        self.intervention_pub.publish(Bool(data=True))
        self.command_pub.publish(float64_array(self.target))  # the first command is where the robot is
        self.status.publish()

    def _release(self) -> None:
        if self.intervening:
            self.intervening = False
            self.intervention_pub.publish(Bool(data=False))
            self.counts["releases"] += 1
            self.status.publish()

    def _send(self, target: np.ndarray) -> None:
        self.target = np.clip(target, self.limits.lower, self.limits.upper)
        if self.intervening:
            # Level-triggered: re-assert the takeover with every command. An edge alone can be undone by an episode
            # event that reaches the safety node after it (topics from different processes are not ordered), which
            # would hand the robot back to the policy while a person believes they are in control.
            self.intervention_pub.publish(Bool(data=True))
        self.command_pub.publish(float64_array(self.target))

    # -- observations (all backends) and the scripted expert ---------------------------------------------------------
    def _on_obs(self, ob: Observation | None) -> None:
        if ob is None:
            return
        self.q = ob.q
        if self.p.backend != "scripted":
            return
        self.episode_steps += 1
        action = np.asarray(self.expert.act(ob.obs), np.float64)
        self.expert_actions[ob.stamp] = action
        for old in sorted(self.expert_actions)[:-8]:
            del self.expert_actions[old]
        if self.intervening:
            self._send(self.limits.denormalize(action))
            self.takeover_ticks += 1
            if self.p.takeover_steps and self.takeover_ticks >= self.p.takeover_steps:
                self._release()
        elif self.p.takeover_after_steps and not self.took_over and \
                self.episode_steps >= self.p.takeover_after_steps:
            self._take_over("time")

    def _on_policy_info(self, msg: Float64MultiArray) -> None:
        info = PolicyInfo.from_msg(msg, self.n)
        if info is None:
            self.counts["malformed_policy_info"] += 1
            return
        expert = self.expert_actions.get(info.obs_stamp)
        if self.intervening or expert is None:
            return
        drift = float(np.max(np.abs(info.proposal - expert)))
        self.drift_count = self.drift_count + 1 if drift > self.p.drift_threshold else 0
        if self.drift_count >= self.p.drift_patience:
            self._take_over("drift")

    # -- devices -----------------------------------------------------------------------------------------------------
    def _on_leader(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        values = np.asarray(msg.position, np.float64)
        if len(msg.name) != values.size or any(name not in index for name in self.leader_names):
            self.counts["malformed_leader"] += 1
            return
        q = values[[index[name] for name in self.leader_names]]
        if not np.all(np.isfinite(q)):
            self.counts["malformed_leader"] += 1
            return
        self.leader_q, self.leader_t = q, self.now()

    def _poll(self) -> None:
        now = self.now()
        if self.p.backend == "leader":
            connected = self.leader_q is not None and now - self.leader_t <= self.p.lost_after_s
            moved = self.leader_prev is not None and self.leader_q is not None and \
                np.max(np.abs(self.leader_q - self.leader_prev)) > self.p.leader_motion
            self.leader_prev = self.leader_q
            if self.leader_q is None:
                return  # not seen yet: not lost either
        else:
            reading = self.device.poll()
            connected = reading.connected
            self._buttons(reading.buttons)
            axes = np.where(np.abs(reading.axes) > self.p.deadzone, reading.axes, 0.0)
            moved = bool(np.any(axes))
        if not connected:
            if not self.device_lost:
                self.device_lost = True
                self.counts["device_lost"] += 1
                self.log.warning("teleop device lost%s", " mid-takeover: the robot holds" if self.intervening else "")
                self.status.publish()
            return
        if moved and not self.intervening:
            self._take_over("device")
        if not self.intervening:
            return
        if moved:
            self.last_active = now
        if self.p.backend == "leader":
            self._send(self.leader_q)
        else:
            self._send(self.target + self._jog(axes) * self.p.jog_speed * self.period)
        if not moved and now - self.last_active > self.p.release_after_s:
            self._release()

    def _jog(self, axes: np.ndarray) -> np.ndarray:
        joints = self.p.axis_joints or tuple(range(min(len(axes), self.n)))
        velocity = np.zeros(self.n)
        for axis, joint in enumerate(joints[:len(axes)]):
            if 0 <= joint < self.n:
                velocity[joint] += axes[axis]
        return velocity

    def _buttons(self, held: frozenset[str]) -> None:
        for name in sorted(held - self.pressed):
            event = self.button_events.get(name)
            if event is not None:
                self.episode_pub.publish(event_message(event, source=self.name, stamp=self.handle.wall_time()))
        self.pressed = held

    # -- episodes ----------------------------------------------------------------------------------------------------
    def _on_episode(self, msg: String) -> None:
        event = parse_event(msg)
        if event is None:
            self.counts["malformed_events"] += 1
            return
        if event["event"] == "start":
            self._release()
            self.took_over = False
            self.episode_steps = self.drift_count = 0
            self.expert_actions.clear()
            if self.p.backend == "scripted":
                self.expert.reset()
            if self.device_lost:
                self._reconnect()
        elif event["event"] in ("success", "failure", "abort"):
            self._release()

    def _reconnect(self) -> None:
        """After a loss, the operator's `start` is the moment to look for the device again."""
        if self.p.backend == "leader":
            self.device_lost = self.now() - self.leader_t > self.p.lost_after_s
            return
        try:
            self.device.close()
            self.device = open_device(self.p.backend, self.p.device, self.p.axis_range, self.p.six_axis)
            self.device_lost = False
        except OSError:
            self.counts["reconnect_failed"] += 1

    def _status(self) -> dict:
        return {"backend": self.p.backend, "intervening": self.intervening, "device_lost": self.device_lost,
                "counts": {**self.assembler.counts, **self.counts}}

    def close(self) -> None:
        self.status.publish()
        if self.device is not None:
            self.device.close()

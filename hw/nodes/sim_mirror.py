"""The `sim_mirror` node: a MuJoCo mirror behind the robot's topics, stepped in real time at its control rate.

Every tick it applies the newest `/robot_command` (absolute joint targets, converted to the mirror's normalized
action with its own joint ranges; before the first command of an episode it holds the reset pose), steps the
physics one control period, and publishes the tick's observation, all parts with one header stamp:
`/robot_rl/task_state` (the rest of the state vector), `/camera/<name>/image_raw`, then `/joint_states`.

Episodes (with `publish_events`): when the task succeeds or hits its time limit the mirror publishes a
`success`/`failure` event, resets, publishes `start` (stamped with the first observation of the new episode) and
that observation. An end event from someone else (an operator's success, failure or abort) resets it too.

Faults, for tests of everything downstream (parameter `fault` at start, or at run time a JSON String
`{"fault": "stop" | "delay" | "drop" | "", "delay_s": .., "drop_prob": ..}` on `/robot_rl/sim_fault`):
`stop` keeps the physics running but publishes no observation (a hung driver), `delay` publishes each observation
`delay_s` late (rounded up to ticks), `drop` drops each observation with probability `drop_prob`.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from hw.latency import LatencyMonitor
from hw.msgs import Float64MultiArray, Header, Image, JointState, String, array_of, stamp_of
from hw.node import Node
from hw.nodes.status import StatusReporter
from hw.observation import image_message, task_state_names
from hw.topics import EPISODE, JOINT_STATES, ROBOT_COMMAND, TASK_STATE, camera_topic, event_message, parse_event
from hw.transport import LATEST, RELIABLE, NodeHandle
from robot_rl.errors import UserError
from robot_rl.scheduling import cpu_steal_seconds

SIM_FAULT = "/robot_rl/sim_fault"
FAULTS = ("", "stop", "delay", "drop")


@dataclass(frozen=True)
class SimMirrorParams:
    task: str = "PushCube"
    variant: str = "nominal"
    seed: int = 0
    control_hz: float = 0.0  # 0: the task's rate
    max_steps: int = 0  # episode time limit in ticks; 0: the task's
    cameras: tuple[str, ...] = ()
    image_size: int = 84
    frame_id: str = "base_link"
    # When given (the graph's shared anchors), they must be the mirror's own: a config that drifted is an error.
    joint_names: tuple[str, ...] = ()
    position_lower: tuple[float, ...] = ()
    position_upper: tuple[float, ...] = ()
    publish_events: bool = True
    wait_subscribers: int = 0  # start the first episode once /joint_states has this many subscribers (nodes) ...
    wait_settle_s: float = 0.5  # ... and this long has passed since (their other endpoints match meanwhile) ...
    wait_timeout_s: float = 60.0  # ... or after this long anyway
    fault: str = ""
    fault_delay_s: float = 0.1
    fault_drop_prob: float = 0.5
    latency_out: str = ""  # write obs -> command latency figures (hw.latency) to this JSON file
    latency_warmup: int = 50
    latency_ticks: int = 0  # measure this many ticks, then write latency_out (0: write at shutdown)
    status_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault {self.fault!r} is not one of {FAULTS}")


class SimMirrorNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        import sim  # the mirror is the one node that needs MuJoCo

        self.p = self.declare(SimMirrorParams)
        try:
            self.env = sim.make_env(self.p.task, variant=self.p.variant, cameras=tuple(self.p.cameras),
                                    image_size=self.p.image_size, control_hz=self.p.control_hz or None,
                                    max_steps=self.p.max_steps or None)
        except sim.SimError as exc:
            raise UserError(f"node {self.name!r}: {exc}") from exc
        self.robot = self.env.unwrapped.robot
        self._check_interface()
        self.period = 1.0 / self.robot.control_hz
        self.n = self.robot.action_dim
        self.task_names = task_state_names(self.robot.state_layout, self.n)
        self.counts: Counter[str] = Counter()
        self.rng = np.random.default_rng(self.p.seed)
        self.fault, self.delay_s, self.drop_prob = self.p.fault, self.p.fault_delay_s, self.p.fault_drop_prob
        self.delayed: deque[tuple[float, list]] = deque()
        self.latency = (LatencyMonitor(self.p.latency_warmup, self.p.latency_ticks, cpu_steal_seconds)
                        if self.p.latency_out else None)
        self.latency_written = False
        self.episodes = self.successes = self.ticks = 0
        self.started = False
        self.t_created = self.now()
        self.t_connected: float | None = None
        self.obs: dict[str, np.ndarray] = {}
        self.action = np.zeros(self.n)
        self.command_after = 0.0

        self.js_pub = self.publisher(JOINT_STATES, JointState, RELIABLE)
        self.task_pub = self.publisher(TASK_STATE, JointState, RELIABLE)
        self.image_pubs = {c: self.publisher(camera_topic(c), Image, RELIABLE) for c in self.p.cameras}
        self.episode_pub = self.publisher(EPISODE, String, RELIABLE)
        self.subscribe(ROBOT_COMMAND, Float64MultiArray, self._on_command, LATEST)
        self.subscribe(EPISODE, String, self._on_episode, RELIABLE)
        self.subscribe(SIM_FAULT, String, self._on_fault, RELIABLE)
        self.status = StatusReporter(self, self._status, self.p.status_period_s)
        self.timer(self.period, self._tick)

    def _check_interface(self) -> None:
        robot, p = self.robot, self.p
        if p.joint_names and tuple(p.joint_names) != robot.joint_names:
            raise UserError(f"node {self.name!r}: joint_names {list(p.joint_names)} are not the mirror's "
                            f"{list(robot.joint_names)}; fix the graph config")
        for name, given, index in (("position_lower", p.position_lower, 0), ("position_upper", p.position_upper, 1)):
            actual = [r[index] for r in robot.joint_ranges]
            if given and not np.allclose(given, actual):
                raise UserError(f"node {self.name!r}: {name} {list(given)} is not the mirror's {actual}; "
                                "fix the graph config")

    # -- episode -----------------------------------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self.obs, _ = self.env.reset(seed=self.p.seed + self.episodes)
        self.episodes += 1
        self.action = self.robot.normalize(self.obs["state"][:self.n].astype(np.float64))  # hold the reset pose
        self.command_after = self.now()
        stamp = self.handle.wall_time()
        if self.p.publish_events:
            self.episode_pub.publish(event_message("start", stamp=stamp, source=self.name, episode=self.episodes))
        self._publish_observation(stamp)

    def _end_episode(self, event: str, reason: str, stamp: float) -> None:
        if self.p.publish_events:
            self.episode_pub.publish(event_message(event, stamp=stamp, source=self.name, reason=reason))
        self.successes += event == "success"
        self._start_episode()

    # -- tick --------------------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        self._flush_delayed()
        if not self.started:
            self._wait_for_graph()
            return
        self.obs, _, terminated, truncated, _ = self.env.step(self.action.astype(np.float32))
        self.ticks += 1
        stamp = self.handle.wall_time()
        if terminated or truncated:
            self._end_episode("success" if terminated else "failure", "terminated" if terminated else "time_limit",
                              stamp)
        else:
            self._publish_observation(stamp)

    def _wait_for_graph(self) -> None:
        """Start the first episode once the nodes that listen to the robot are there (their start event must not
        go to nobody), or after `wait_timeout_s`."""
        now, waited = self.now(), self.now() - self.t_created
        if self.js_pub.subscription_count() < self.p.wait_subscribers:
            self.t_connected = None
            if waited < self.p.wait_timeout_s:
                return
            self.log.warning("starting with %d of %d subscribers after %.1f s", self.js_pub.subscription_count(),
                             self.p.wait_subscribers, waited)
        elif self.t_connected is None:
            self.t_connected = now
        if self.t_connected is not None and now - self.t_connected < self.p.wait_settle_s:
            return
        self.started = True
        self._start_episode()

    def _publish_observation(self, stamp: float) -> None:
        header = Header(stamp=stamp_of(stamp), frame_id=self.p.frame_id)
        state = self.obs["state"].astype(np.float64)
        messages = [(self.task_pub, JointState(header=header, name=self.task_names,
                                               position=state[2 * self.n:].tolist()))]
        messages += [(self.image_pubs[c], image_message(self.obs[f"image_{c}"], header)) for c in self.p.cameras]
        messages.append((self.js_pub, JointState(header=header, name=list(self.robot.joint_names),
                                                 position=state[:self.n].tolist(),
                                                 velocity=state[self.n:2 * self.n].tolist())))
        if self.fault == "stop":
            self.counts["withheld_observations"] += 1
        elif self.fault == "drop" and self.rng.random() < self.drop_prob:
            self.counts["dropped_observations"] += 1
        elif self.fault == "delay":
            self.delayed.append((self.now() + self.delay_s, messages))
        else:
            self._send(messages)

    def _send(self, messages: list) -> None:
        for pub, msg in messages[:-1]:
            pub.publish(msg)
        published_at = time.perf_counter()
        pub, msg = messages[-1]  # /joint_states last: the tick is complete once it is out
        pub.publish(msg)
        if self.latency is None:
            return
        self.latency.on_observation(published_at)  # one executor thread: no command is handled before this
        if self.latency.done and not self.latency_written:
            self.latency.write(self.p.latency_out)
            self.latency_written = True

    def _flush_delayed(self) -> None:
        while self.delayed and self.delayed[0][0] <= self.now() + 1e-9:
            self._send(self.delayed.popleft()[1])

    # -- inputs ------------------------------------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        if self.latency is not None:
            self.latency.on_command(time.perf_counter())
        q = array_of(msg).ravel()
        if q.shape != (self.n,) or not np.all(np.isfinite(q)):
            self.counts["malformed_commands"] += 1
            return
        if not self.started or self.now() < self.command_after:
            self.counts["commands_before_start"] += 1
            return
        self.action = np.clip(self.robot.normalize(q), -1.0, 1.0)
        self.counts["commands"] += 1

    def _on_episode(self, msg: String) -> None:
        event = parse_event(msg)
        if event is None:
            self.counts["malformed_events"] += 1
            return
        if event.get("source") == self.name or not self.started:
            return
        if event["event"] in ("success", "failure", "abort"):
            self.counts[f"external_{event['event']}"] += 1
            self.successes += event["event"] == "success"
            self._start_episode()

    def _on_fault(self, msg: String) -> None:
        try:
            fault = json.loads(msg.data)
            kind = fault["fault"]
        except (json.JSONDecodeError, KeyError, TypeError):
            kind = None
        if kind not in FAULTS:
            self.counts["malformed_faults"] += 1
            return
        self.fault = kind
        self.delay_s = float(fault.get("delay_s", self.delay_s))
        self.drop_prob = float(fault.get("drop_prob", self.drop_prob))
        self.status.publish()

    def _status(self) -> dict:
        return {"episodes": self.episodes, "successes": self.successes, "ticks": self.ticks, "fault": self.fault,
                "counts": dict(self.counts)}

    def close(self) -> None:
        if self.latency is not None and not self.latency_written:
            self.latency.write(self.p.latency_out)
        self.status.publish()
        self.env.close()

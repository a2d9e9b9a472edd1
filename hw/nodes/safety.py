"""The `safety` node: the only publisher of `/robot_command`, wiring `hw.safety.SafetyFilter` to the graph.

Commands are filtered the moment they arrive (no added period of latency); a timer at the control rate runs the
watchdog and republishes the hold while holding. Status (mode, reason, counters of everything dropped or clipped)
goes to `/robot_rl/safety_status` on every mode change and every `status_period_s`.
"""

from __future__ import annotations

import json

import numpy as np

from hw.graph import resolve_entry
from hw.msgs import Bool, Float64MultiArray, JointState, String, array_of, float64_array
from hw.node import Node
from hw.safety import SafetyFilter, SafetyParams
from hw.topics import (
    EPISODE,
    ESTOP,
    JOINT_STATES,
    POLICY_COMMAND,
    ROBOT_COMMAND,
    SAFETY_STATUS,
    TELEOP_COMMAND,
    TELEOP_INTERVENTION,
    parse_event,
)
from hw.transport import LATCHED, LATEST, RELIABLE, SENSOR_DATA, NodeHandle


class SafetyNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.params = self.declare(SafetyParams)
        fk = resolve_entry(self.params.workspace_fk) if self.params.workspace_fk else None
        self.filter = SafetyFilter(self.params, fk=fk)
        self.command_pub = self.publisher(ROBOT_COMMAND, Float64MultiArray, LATEST)
        self.status_pub = self.publisher(SAFETY_STATUS, String, LATCHED)
        self.subscribe(JOINT_STATES, JointState, self._on_joint_state, SENSOR_DATA)
        self.subscribe(POLICY_COMMAND, Float64MultiArray, self._on_policy, LATEST)
        self.subscribe(TELEOP_COMMAND, Float64MultiArray, self._on_teleop, LATEST)
        self.subscribe(TELEOP_INTERVENTION, Bool, self._on_intervention, RELIABLE)
        self.subscribe(ESTOP, Bool, self._on_estop, RELIABLE)
        self.subscribe(EPISODE, String, self._on_episode, RELIABLE)
        self.timer(self.params.period, self._tick)
        self._last_status: tuple = ()
        self._last_status_t = -np.inf

    def _send(self, command: np.ndarray | None) -> None:
        if command is not None:
            self.command_pub.publish(float64_array(command))
        self._publish_status()

    def _publish_status(self, force: bool = False) -> None:
        status = self.filter.status()
        key = (status["mode"], status["reason"], status["intervention"], status["estop"])
        now = self.now()
        if force or key != self._last_status or now - self._last_status_t >= self.params.status_period_s:
            self._last_status, self._last_status_t = key, now
            self.status_pub.publish(String(data=json.dumps(status)))

    def _on_joint_state(self, msg: JointState) -> None:
        self.filter.on_joint_state(msg.name, msg.position, self.now())

    def _on_policy(self, msg: Float64MultiArray) -> None:
        self._send(self.filter.on_policy_command(array_of(msg).ravel(), self.now()))

    def _on_teleop(self, msg: Float64MultiArray) -> None:
        self._send(self.filter.on_teleop_command(array_of(msg).ravel(), self.now()))

    def _on_intervention(self, msg: Bool) -> None:
        self.filter.on_intervention(msg.data, self.now())
        self._publish_status()

    def _on_estop(self, msg: Bool) -> None:
        self._send(self.filter.on_estop(msg.data, self.now()))

    def _on_episode(self, msg: String) -> None:
        event = parse_event(msg)
        if event is None:
            self.filter.counts["malformed_events"] += 1
            return
        self._send(self.filter.on_episode_event(event["event"], self.now(), str(event.get("source", ""))))

    def _tick(self) -> None:
        self._send(self.filter.tick(self.now()))

    def close(self) -> None:
        self._publish_status(force=True)

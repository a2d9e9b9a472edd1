"""The safety node wired to topics, on the in-process transport (virtual time, real CDR on every message)."""

import json

import numpy as np
import pytest

from hw import topics
from hw.graph import NodeSpec
from hw.msgs import Bool, Float64MultiArray, JointState, String, array_of, float64_array
from hw.run import build_node
from hw.transport import LATEST, InProcessTransport

NAMES = ["j0", "j1", "j2"]
PERIOD = 0.02
PARAMS = {"joint_names": NAMES, "position_lower": [-1.0] * 3, "position_upper": [1.0] * 3,
          "max_delta": [0.1] * 3, "rate_hz": 1 / PERIOD, "stale_periods": 2.0, "teleop_stale_periods": 4.0}
DRIVER_TOPIC = "/forward_position_controller/commands"


class Rig:
    """The safety node plus a test node standing in for the driver, the actor, the teleop and the operator."""

    def __init__(self, **params):
        self.bus = InProcessTransport()
        spec = NodeSpec("safety", "hw.nodes.safety:SafetyNode", {**PARAMS, **params},
                        {topics.ROBOT_COMMAND: DRIVER_TOPIC})  # remapped onto a ros2_control controller
        self.safety = build_node(spec, self.bus)
        h = self.bus.create_node("rig")
        self.js = h.publisher(topics.JOINT_STATES, JointState)
        self.policy = h.publisher(topics.POLICY_COMMAND, Float64MultiArray, LATEST)
        self.teleop = h.publisher(topics.TELEOP_COMMAND, Float64MultiArray, LATEST)
        self.intervention = h.publisher(topics.TELEOP_INTERVENTION, Bool)
        self.estop = h.publisher(topics.ESTOP, Bool)
        self.episode = h.publisher(topics.EPISODE, String)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.status: list[dict] = []
        h.subscribe(DRIVER_TOPIC, Float64MultiArray, lambda m: self.commands.append((self.bus.now(), array_of(m))))
        h.subscribe(topics.SAFETY_STATUS, String, lambda m: self.status.append(json.loads(m.data)))

    def observe(self, q) -> None:
        self.js.publish(JointState(name=NAMES, position=[float(x) for x in q]))
        self.bus.deliver()

    def command(self, q, pub=None) -> None:
        (pub or self.policy).publish(float64_array(q))
        self.bus.deliver()

    def sent(self) -> np.ndarray:
        return np.array([c for _, c in self.commands])


def test_commands_flow_limited_and_bad_ones_never_reach_the_robot():
    rig = Rig()
    assert rig.bus.published.get(topics.ROBOT_COMMAND) is None  # only the remapped topic is used
    q = np.zeros(3)
    for step in range(30):
        rig.observe(q)
        target = [0.05 * step, -0.04 * step, 0.0]
        if step % 5 == 1:
            target = [np.nan, 0.0, 0.0]
        elif step % 5 == 3:
            target = [5.0, -5.0, 0.0]
        elif step % 7 == 6:
            target = [0.0, 0.0]
        rig.command(target)
        if rig.commands:
            q = rig.commands[-1][1]
        rig.bus.advance(PERIOD)
    sent = rig.sent()
    assert len(sent) >= 15 and np.all(np.isfinite(sent))
    assert np.all(np.abs(sent) <= 1.0) and np.all(np.abs(np.diff(sent, axis=0)) <= 0.1 + 1e-12)
    counts = rig.status[-1]["counts"]
    assert counts["policy_nonfinite"] == 6 and counts["policy_wrong_length"] >= 1 and counts["clipped_position"] >= 6


def test_holds_within_one_control_period_when_joint_states_stop():
    rig = Rig()
    q = np.zeros(3)
    for _ in range(5):
        rig.observe(q)
        rig.command(q + 0.05)
        q = rig.commands[-1][1]
        rig.bus.advance(PERIOD)
    last_obs, safe = rig.bus.now() - PERIOD, q.copy()
    n_before = len(rig.commands)
    for _ in range(10):  # the driver died; the actor keeps commanding
        rig.command(q + 0.3)
        rig.bus.advance(PERIOD)
    after = rig.commands[n_before:]
    held = [(t, c) for t, c in after if np.allclose(c, after[-1][1])]
    first_hold_t = held[0][0]
    assert first_hold_t - last_obs <= 2.0 * PERIOD + PERIOD + 1e-9  # stale after 2 periods, held within one more
    assert all(np.allclose(c, held[0][1]) for t, c in after if t >= first_hold_t)  # nothing but the hold after
    assert np.all(np.abs(held[0][1] - safe) <= 0.1 + 1e-12)  # the last safe command, not the actor's target
    assert rig.status[-1]["mode"] == "hold" and rig.status[-1]["reason"] == "obs_stale"


def test_estop_topic_and_episode_events():
    rig = Rig()
    rig.observe(np.zeros(3))
    rig.command([0.05, 0.0, 0.0])
    rig.estop.publish(Bool(data=True))
    rig.bus.deliver()
    assert rig.status[-1]["reason"] == "estop"
    n = len(rig.commands)
    rig.command([0.1, 0.1, 0.1])
    assert len(rig.commands) == n  # dropped
    rig.episode.publish(String(data="not json"))
    rig.episode.publish(String(data=json.dumps({"event": "teleport"})))
    rig.estop.publish(Bool(data=False))
    rig.episode.publish(topics.event_message("start"))
    rig.bus.deliver()
    rig.observe(np.zeros(3))
    rig.command([0.1, 0.1, 0.1])
    np.testing.assert_allclose(rig.commands[-1][1], [0.1, 0.1, 0.1])
    assert rig.status[-1]["mode"] == "policy" and rig.status[-1]["counts"]["malformed_events"] == 2


def test_bumpless_takeover_and_unplugged_device_through_topics():
    rig = Rig()
    robot = np.array([0.3, -0.2, 0.1])
    rig.observe(robot)
    rig.command(robot)
    rig.intervention.publish(Bool(data=True))
    rig.bus.deliver()
    device = np.array([-0.8, 0.8, 0.8])
    rig.command(device, rig.teleop)
    np.testing.assert_allclose(rig.commands[-1][1], robot)
    rig.command(device + 0.05, rig.teleop)
    np.testing.assert_allclose(rig.commands[-1][1], robot + 0.05)
    assert rig.status[-1]["mode"] == "teleop"
    for _ in range(8):  # device unplugged: no more teleop commands; robot and actor alive
        rig.observe(robot + 0.05)
        rig.command([0.9, 0.9, 0.9])
        rig.bus.advance(PERIOD)
    assert rig.status[-1]["reason"] == "teleop_lost"
    rig.intervention.publish(Bool(data=False))
    rig.bus.deliver()
    rig.observe(robot + 0.05)
    rig.command([0.9, 0.9, 0.9])
    np.testing.assert_allclose(rig.commands[-1][1], robot + 0.05)  # still holding
    rig.episode.publish(topics.event_message("start"))
    rig.bus.deliver()
    rig.command([0.9, 0.9, 0.9])
    np.testing.assert_allclose(rig.commands[-1][1], robot + 0.15)  # policy resumed, rate limited


def test_workspace_from_an_entry_point_and_bad_params_fail_at_start():
    from robot_rl.errors import UserError

    names = ["waist", "shoulder", "elbow", "wrist_angle"]
    params = {"joint_names": names, "position_lower": [-1.6, -0.4, -2.7, -2.3], "position_upper": [1.6, 1.9, 0.4, 0.8],
              "max_delta": [1.0] * 4, "workspace_fk": "hw.workspace:pusher_tcp",
              "workspace_lower": [-1.0, -1.0, 0.05], "workspace_upper": [1.0, 1.0, 1.0]}
    bus = InProcessTransport()
    node = build_node(NodeSpec("safety", "hw.nodes.safety:SafetyNode", params), bus)
    node.filter.on_joint_state(names, [0.0, 0.8, -1.2, -1.0], 0.0)
    assert node.filter.on_policy_command([0.0, 0.3, -1.0, -0.8], 0.0) is None
    assert node.filter.counts["rejected_workspace"] == 1
    with pytest.raises(UserError, match="cannot load"):
        build_node(NodeSpec("safety", "hw.nodes.safety:SafetyNode", {**params, "workspace_fk": "hw.nope:f"}), bus)
    with pytest.raises(UserError, match="max_delta"):
        build_node(NodeSpec("safety", "hw.nodes.safety:SafetyNode", {**params, "max_delta": "fast"}), bus)

"""Real Cyclone DDS on loopback, a random domain id per test: the transport, then the safety node as its own process.

Assertions are on what arrives and in which order, never on latency: the machine is shared and loaded.
"""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from hw import topics
from hw.graph import NodeSpec
from hw.launcher import start_node, stop
from hw.msgs import Float64MultiArray, JointState, String, array_of, float64_array
from hw.transport import LATCHED, LATEST, RELIABLE, SENSOR_DATA, QoS
from hw.transport.dds import DdsTransport

NAMES = ["j0", "j1", "j2"]
PERIOD = 0.02
STALE_PERIODS = 2.0


@pytest.fixture
def domain_id() -> int:
    return random.SystemRandom().randint(1, 232)


def spin_until(transport: DdsTransport, condition, timeout: float) -> bool:
    transport.spin(until=condition, timeout=timeout)
    return condition()


def test_dds_transport_pub_sub_timers_and_qos(domain_id):
    transport = DdsTransport(domain_id, loopback=True)
    try:
        a, b = transport.create_node("a"), transport.create_node("b")
        got, best_effort_to_reliable, ticks = [], [], []
        deep = QoS(reliable=True, depth=32)
        b.subscribe("/x", JointState, got.append, deep)
        pub = a.publisher("/x", JointState, deep)
        b.subscribe("/y", String, best_effort_to_reliable.append, RELIABLE)
        weak = a.publisher("/y", String, SENSOR_DATA)
        a.timer(0.01, lambda: ticks.append(transport.now()))
        assert spin_until(transport, lambda: pub.subscription_count() == 1, 10.0)
        assert weak.subscription_count() == 0  # DDS refuses reliable-from-best-effort, as in-process does
        for i in range(20):
            pub.publish(JointState(name=["j"], position=[float(i)]))
        weak.publish(String(data="lost"))
        assert spin_until(transport, lambda: len(got) == 20, 10.0)
        assert [m.position[0] for m in got] == list(range(20)) and best_effort_to_reliable == []
        assert spin_until(transport, lambda: len(ticks) >= 3, 5.0)
        assert np.all(np.diff(ticks) > 0)

        latched = a.publisher("/weights", String, LATCHED)
        latched.publish(String(data="v1"))
        late = []
        b.subscribe("/weights", String, late.append, LATCHED)  # joins after the publish
        assert spin_until(transport, lambda: late != [], 10.0) and late[0].data == "v1"
    finally:
        transport.close()


def thread_niceness(pid: int) -> set[int]:
    """The niceness of each thread of a process (field 19 of /proc/PID/task/TID/stat)."""
    tasks = Path(f"/proc/{pid}/task")
    return {int((tasks / tid / "stat").read_text().rsplit(")", 1)[1].split()[16]) for tid in os.listdir(tasks)}


def test_safety_node_process_over_dds(domain_id, tmp_path):
    """Two processes: this one plays driver + actor; the safety node runs as `python -m hw.run` over loopback."""
    params = {"joint_names": NAMES, "position_lower": [-1.0] * 3, "position_upper": [1.0] * 3,
              "max_delta": [0.05] * 3, "rate_hz": 1 / PERIOD, "stale_periods": STALE_PERIODS,
              "status_period_s": 0.1}
    proc = start_node(NodeSpec("safety", "hw.nodes.safety:SafetyNode", params, nice=2), domain_id, loopback=True,
                      log_dir=tmp_path)
    transport = DdsTransport(domain_id, loopback=True)
    try:
        h = transport.create_node("rig")
        js = h.publisher(topics.JOINT_STATES, JointState, RELIABLE)
        policy = h.publisher(topics.POLICY_COMMAND, Float64MultiArray, LATEST)
        received: list[np.ndarray] = []
        status: list[dict] = []
        cmd_sub = h.subscribe(topics.ROBOT_COMMAND, Float64MultiArray, lambda m: received.append(array_of(m)),
                              RELIABLE)
        h.subscribe(topics.SAFETY_STATUS, String, lambda m: status.append(json.loads(m.data)), LATCHED)
        connected = lambda: (js.subscription_count() and policy.subscription_count()  # noqa: E731
                             and cmd_sub.publisher_count())
        assert spin_until(transport, connected, 60.0), (tmp_path / "safety.log").read_text()
        transport.spin(timeout=0.3)  # let both sides finish matching every endpoint
        # the spec's nice applies to every thread of the node process (DDS receive threads included)
        assert thread_niceness(proc.pid) == {os.getpriority(os.PRIO_PROCESS, 0) + 2}

        # Phase 1: the robot follows the commands; every 4th is out of limits, every 4th NaN.
        q, sent_nan, sent_far = np.zeros(3), 0, 0
        for step in range(60):
            js.publish(JointState(name=NAMES, position=q.tolist()))
            target = 0.6 * np.sin(0.1 * step + np.arange(3))
            if step % 4 == 1:
                target, sent_nan = np.array([np.nan, 0.0, 0.0]), sent_nan + 1
            elif step % 4 == 3:
                target, sent_far = np.array([5.0, -5.0, 2.0]), sent_far + 1
            policy.publish(float64_array(target))
            transport.spin(timeout=PERIOD)
            if received:
                q = received[-1]
        forwarded = np.array(received)
        assert len(forwarded) > 0
        assert np.all(np.isfinite(forwarded)) and np.all(np.abs(forwarded) <= 1.0)
        assert np.all(np.abs(np.diff(forwarded, axis=0)) <= 0.05 + 1e-9)
        assert spin_until(transport, lambda: status and status[-1]["counts"].get("policy_nonfinite", 0) > 0, 5.0)

        # Phase 2: /joint_states stop; the actor keeps sending fresh, valid, distinct commands.
        n_before = len(received)
        for step in range(40):
            policy.publish(float64_array(q + 0.01 * (step + 1) * np.array([1.0, -1.0, 0.5])))
            transport.spin(timeout=PERIOD)
        after = received[n_before:]
        assert len(after) >= 5, "the safety node must keep sending the hold every period"
        hold = after[-1]
        first_hold = next(i for i, c in enumerate(after) if np.array_equal(c, hold))
        assert all(np.array_equal(c, hold) for c in after[first_hold:])  # once holding, only the hold
        # Commands forwarded after the last observation: only while it was fresh (2 periods), so a handful at most.
        assert first_hold <= STALE_PERIODS + 2
        assert spin_until(transport, lambda: status[-1]["reason"] == "obs_stale", 5.0)

        # Phase 3: observations resume; commands flow again from the held position.
        for _ in range(10):
            js.publish(JointState(name=NAMES, position=hold.tolist()))
            policy.publish(float64_array(hold + 0.2))
            transport.spin(timeout=PERIOD)
        assert not np.array_equal(received[-1], hold)
        assert np.all(np.abs(np.diff(np.array(received), axis=0)) <= 0.05 + 1e-9)
    finally:
        transport.close()
        codes = stop([proc])
    assert list(codes.values()) == [0]  # SIGINT: a clean shutdown

"""The transport interface on the in-process transport, and what all three transports share."""

import inspect

import pytest

from hw.graph import NodeSpec
from hw.msgs import Bool, Float64MultiArray, JointState, String
from hw.node import Node
from hw.run import build_node
from hw.transport import (
    LATCHED,
    LATEST,
    RELIABLE,
    SENSOR_DATA,
    InProcessTransport,
    NodeHandle,
    QoS,
    make_transport,
    qos_compatible,
)
from hw.transport.dds import DdsNodeHandle
from hw.transport.inprocess import InProcessNodeHandle
from hw.transport.ros import RclpyNodeHandle
from robot_rl.errors import UserError


def test_qos_matching_follows_dds_request_offer_rules():
    bus = InProcessTransport()
    a, b = bus.create_node("a"), bus.create_node("b")
    got = {"reliable": [], "best_effort": [], "latched": []}
    pub = a.publisher("/x", String, SENSOR_DATA)  # best effort
    b.subscribe("/x", String, got["reliable"].append, RELIABLE)
    b.subscribe("/x", String, got["best_effort"].append, SENSOR_DATA)
    pub.publish(String(data="hi"))
    bus.deliver()
    assert got["reliable"] == [] and [m.data for m in got["best_effort"]] == ["hi"]
    assert pub.subscription_count() == 1
    assert not qos_compatible(RELIABLE, LATCHED) and qos_compatible(LATCHED, RELIABLE)


def test_keep_last_depth_and_transient_local_late_joiner():
    bus = InProcessTransport()
    a, b = bus.create_node("a"), bus.create_node("b")
    latest = []
    b.subscribe("/cmd", Float64MultiArray, latest.append, LATEST)
    cmd = a.publisher("/cmd", Float64MultiArray, LATEST)
    for i in range(5):
        cmd.publish(Float64MultiArray(data=[float(i)]))
    bus.deliver()
    assert [m.data for m in latest] == [[4.0]]  # depth 1: only the newest command survives a backlog

    weights = a.publisher("/weights", String, LATCHED)
    weights.publish(String(data="v1"))
    weights.publish(String(data="v2"))
    late, volatile = [], []
    b.subscribe("/weights", String, late.append, LATCHED)
    b.subscribe("/weights", String, volatile.append, RELIABLE)
    bus.deliver()
    assert [m.data for m in late] == ["v2"] and volatile == []


def test_messages_are_copied_through_cdr_and_types_are_checked():
    bus = InProcessTransport()
    a, b = bus.create_node("a"), bus.create_node("b")
    got = []
    b.subscribe("/joint_states", JointState, got.append)
    pub = a.publisher("/joint_states", JointState)
    msg = JointState(name=["j"], position=[1.0])
    pub.publish(msg)
    msg.position[0] = 99.0  # the sender mutating its message after publish must not reach the receiver
    bus.deliver()
    assert got[0].position == [1.0] and got[0] is not msg
    with pytest.raises(TypeError):
        pub.publish(String(data="wrong type"))
    with pytest.raises(TypeError):
        b.subscribe("/joint_states", Bool, got.append)


def test_timers_run_in_virtual_time_and_callbacks_can_publish():
    bus = InProcessTransport()
    node = bus.create_node("n")
    fired, echoed = [], []
    pub = node.publisher("/tick", Float64MultiArray)
    node.subscribe("/tick", Float64MultiArray, lambda m: echoed.append((bus.now(), m.data[0])))
    node.timer(0.1, lambda: (fired.append(bus.now()), pub.publish(Float64MultiArray(data=[bus.now()]))))
    slow = node.timer(0.25, lambda: fired.append(-bus.now()))
    bus.advance(0.5)
    assert fired == pytest.approx([0.1, 0.2, -0.25, 0.3, 0.4, 0.5, -0.5])  # ties: creation order
    assert [t for t, _ in echoed] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # delivered right after each tick
    slow.cancel()
    bus.advance(0.3)
    assert all(t > 0 for t in fired[7:]) and bus.now() == pytest.approx(0.8)


def test_remapping_and_node_destroy():
    bus = InProcessTransport()
    robot = bus.create_node("robot")
    commands = []
    robot.subscribe("/forward_position_controller/commands", Float64MultiArray, commands.append)
    node = bus.create_node("safety", remappings={"/robot_command": "/forward_position_controller/commands"})
    pub = node.publisher("/robot_command", Float64MultiArray)
    assert pub.topic == "/forward_position_controller/commands"
    pub.publish(Float64MultiArray(data=[1.0]))
    bus.deliver()
    assert len(commands) == 1
    with pytest.raises(ValueError):
        node.publisher("relative_topic", String)
    robot.destroy()
    pub.publish(Float64MultiArray(data=[2.0]))
    bus.deliver()
    assert len(commands) == 1 and pub.subscription_count() == 0


class _ParamsNode(Node):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Params:
        gains: tuple[float, ...]
        rate_hz: float = 50.0
        enabled: bool = True
        label: str = "x"

    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.params = self.declare(self.Params)


def test_parameters_are_typed_required_and_typos_are_errors():
    bus = InProcessTransport()
    entry = f"{__name__}:_ParamsNode"
    node = build_node(NodeSpec("p", entry, {"gains": [1, 2.5], "rate_hz": 20}), bus)
    assert node.params == _ParamsNode.Params(gains=(1.0, 2.5), rate_hz=20.0)
    with pytest.raises(UserError, match="'gains' is required"):
        build_node(NodeSpec("p", entry, {}), bus)
    with pytest.raises(UserError, match="must be a number"):
        build_node(NodeSpec("p", entry, {"gains": [1.0], "rate_hz": "fast"}), bus)
    with pytest.raises(UserError, match="rate_hzz"):
        build_node(NodeSpec("p", entry, {"gains": [1.0], "rate_hzz": 10.0}), bus)


def test_all_transports_offer_the_same_node_interface():
    """The rclpy adapter cannot run here; at least it implements exactly what node code may call."""
    interface = {"publisher", "subscribe", "timer", "now", "wall_time", "destroy"}
    for handle_type in (InProcessNodeHandle, DdsNodeHandle, RclpyNodeHandle):
        overridden = {name for name, fn in vars(handle_type).items() if inspect.isfunction(fn)}
        assert interface <= overridden, handle_type
        for name in interface:
            ours = inspect.signature(getattr(NodeHandle, name)).parameters
            theirs = inspect.signature(getattr(handle_type, name)).parameters
            assert list(ours) == list(theirs), (handle_type, name)
    assert QoS() == RELIABLE


def test_rclpy_transport_says_how_to_get_ros_when_missing():
    pytest.importorskip("cyclonedds")
    try:
        import rclpy  # noqa: F401
        pytest.skip("rclpy is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match="rclpy"):
        make_transport("rclpy")
    with pytest.raises(UserError, match="unknown transport"):
        make_transport("zeromq")

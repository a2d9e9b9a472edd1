"""The rclpy transport runs the unchanged safety node (rclpy is not installable here: a minimal stand-in).

The stand-in mimics the parts of rclpy and of rosidl-generated message classes the adapter touches (create_node,
publishers/subscriptions/timers, declare_parameter with launch overrides, QoSProfile, messages with
`get_fields_and_field_types`), so the adapter's conversions, QoS mapping and parameter handling really execute.
"""

import array
import dataclasses
import sys
import types

import numpy as np
import pytest

from hw import msgs, topics
from hw.graph import NodeSpec
from hw.run import build_node

PARAMS = {"joint_names": ["a", "b"], "position_lower": [-1.0, -1.0], "position_upper": [1.0, 1.0],
          "max_delta": [0.1, 0.1], "rate_hz": 50.0}


def _ros_message_class(msg_type):
    """A rosidl-like class: same fields, sequences as array.array for numbers, nested messages as instances."""
    fields = {f.name: f for f in dataclasses.fields(msg_type)}

    def __init__(self):
        for name, f in fields.items():
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(self, name, _ros_message_class(type(default))() if isinstance(default, msgs.IdlStruct)
                    else default)

    def __setattr__(self, name, value):
        if name not in fields:
            raise AttributeError(f"{type(self).__name__} has no field {name}")  # rosidl uses __slots__
        if isinstance(value, list) and value and isinstance(value[0], float):
            value = array.array("d", value)
        object.__setattr__(self, name, value)

    name = msgs.ros_type_name(msg_type)
    pkg, _, short = name.split("/")
    cls = _CLASSES.get(name)
    if cls is None:
        cls = _CLASSES[name] = type(short, (), {
            "__init__": __init__, "__setattr__": __setattr__, "__module__": f"{pkg}.msg._{short.lower()}",
            "get_fields_and_field_types": classmethod(lambda c: {n: "?" for n in fields})})
    return cls


_CLASSES: dict = {}


class _Graph:
    def __init__(self):
        self.subs: dict[str, list] = {}
        self.pending: list = []
        self.timers: list = []
        self.overrides: dict = {}  # what a --params-file from ros2 launch would set


class _Node:
    def __init__(self, graph, name, cli_args):
        self.graph, self.name, self.cli_args, self.params = graph, name, cli_args, {}

    def create_publisher(self, cls, topic, qos):
        graph = self.graph
        pub = types.SimpleNamespace(cls=cls, topic=topic, qos=qos, get_subscription_count=lambda: 1)
        pub.publish = lambda m: graph.pending.extend((cb, m) for cb in graph.subs.get(topic, []))
        return pub

    def create_subscription(self, cls, topic, callback, qos):
        self.graph.subs.setdefault(topic, []).append(callback)
        return types.SimpleNamespace(topic=topic)

    def create_timer(self, period, callback):
        timer = types.SimpleNamespace(period=period, callback=callback, cancel=lambda: None)
        self.graph.timers.append(timer)
        return timer

    def declare_parameter(self, name, value=None):
        self.params[name] = self.graph.overrides.get(name, value)
        return types.SimpleNamespace(value=self.params[name])

    def get_clock(self):
        time_cls = _ros_message_class(msgs.Time)

        def to_msg():
            t = time_cls()
            t.sec, t.nanosec = 1_700_000_000, 250_000_000
            return t
        return types.SimpleNamespace(now=lambda: types.SimpleNamespace(to_msg=to_msg))

    def count_publishers(self, topic):
        return 1

    def destroy_node(self):
        pass


@pytest.fixture
def ros(monkeypatch):
    graph = _Graph()
    state = {"ok": False}
    rclpy = types.ModuleType("rclpy")
    rclpy.ok = lambda: state["ok"]
    rclpy.init = lambda args=None: state.update(ok=True, args=args)
    rclpy.shutdown = lambda: state.update(ok=False)
    rclpy.create_node = lambda name, cli_args=None: _Node(graph, name, cli_args)
    executors = types.ModuleType("rclpy.executors")

    class SingleThreadedExecutor:
        def add_node(self, node):
            pass

        def spin_once(self, timeout_sec=None):
            while graph.pending:
                callback, msg = graph.pending.pop(0)
                callback(msg)
    executors.SingleThreadedExecutor = SingleThreadedExecutor
    qos = types.ModuleType("rclpy.qos")
    qos.QoSProfile = lambda **kw: kw
    qos.HistoryPolicy = types.SimpleNamespace(KEEP_LAST="keep_last")
    qos.ReliabilityPolicy = types.SimpleNamespace(RELIABLE="reliable", BEST_EFFORT="best_effort")
    qos.DurabilityPolicy = types.SimpleNamespace(TRANSIENT_LOCAL="transient_local", VOLATILE="volatile")
    modules = {"rclpy": rclpy, "rclpy.executors": executors, "rclpy.qos": qos}
    for msg_type in msgs.MESSAGE_TYPES:
        pkg, _, short = msgs.ros_type_name(msg_type).split("/")
        module = modules.setdefault(f"{pkg}.msg", types.ModuleType(f"{pkg}.msg"))
        setattr(module, short, _ros_message_class(msg_type))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return graph


def test_safety_node_runs_unchanged_on_the_rclpy_adapter(ros):
    from hw.transport import make_transport
    from hw.transport.ros import from_ros, to_ros

    ros.overrides = {"max_delta": [0.2, 0.2]}  # ros2 launch's parameter file wins over the spec's default
    transport = make_transport("rclpy", ros_args=["hw.run", "--ros-args", "-r", "__node:=safety"])
    node = build_node(NodeSpec("safety", "hw.nodes.safety:SafetyNode", PARAMS,
                               {topics.ROBOT_COMMAND: "/forward_position_controller/commands"}), transport)
    assert node.params.max_delta == (0.2, 0.2) and node.params.joint_names == ("a", "b")
    assert node.handle.node.cli_args == ["--ros-args", "-r", "/robot_command:=/forward_position_controller/commands"]
    assert [t.period for t in ros.timers] == [pytest.approx(0.02)]

    out = []
    # rclpy remaps by itself; the adapter hands it the ROS name, so the stand-in graph sees /robot_command.
    ros.subs.setdefault(topics.ROBOT_COMMAND, []).append(out.append)
    state = to_ros(msgs.JointState(header=msgs.Header(stamp=msgs.Time(sec=3, nanosec=4), frame_id="base"),
                                   name=["b", "a"], position=[0.0, 0.0]))
    assert isinstance(state.position, array.array) and type(state.header.stamp).__name__ == "Time"
    ros.pending.extend((cb, state) for cb in ros.subs[topics.JOINT_STATES])
    command = to_ros(msgs.float64_array([0.5, np.nan]))
    good = to_ros(msgs.float64_array([0.5, -0.5]))
    ros.pending.extend((cb, m) for m in (command, good) for cb in ros.subs[topics.POLICY_COMMAND])
    transport.spin(timeout=0.05)
    assert len(out) == 1 and list(out[0].data) == pytest.approx([0.2, -0.2])  # NaN dropped, delta limited
    back = from_ros(state)
    assert back == msgs.JointState(header=msgs.Header(stamp=msgs.Time(sec=3, nanosec=4), frame_id="base"),
                                   name=["b", "a"], position=[0.0, 0.0])
    assert node.stamp() == msgs.Time(sec=1_700_000_000, nanosec=250_000_000)
    transport.close()

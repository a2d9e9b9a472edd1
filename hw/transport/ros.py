"""rclpy transport: the same node classes as native ROS 2 nodes, where ROS 2 is installed (rclpy is not on PyPI).

A thin adapter: topics, QoS, timers and parameters map one to one onto rclpy; messages are converted field by
field between `hw.msgs` and the ROS 2 classes of the same name (identical layouts, checked by the CDR test).
Remappings and parameters arrive the ROS way (`--ros-args`, as `ros2 launch` passes them); the spec's values are
the declared defaults, so a node started by hand behaves like one started by the launch file.
rclpy is imported inside, so this module imports anywhere.
"""

from __future__ import annotations

import array
import importlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from cyclonedds.idl import IdlStruct

from hw.msgs import MESSAGE_TYPES, ros_type_name, seconds_of
from hw.transport.base import MISSING, RELIABLE, M, NodeHandle, QoS
from robot_rl.errors import UserError


def _rclpy():
    try:
        import rclpy
    except ImportError as exc:
        raise UserError("transport=rclpy needs ROS 2's rclpy (source your ROS 2 setup.bash); "
                        "without ROS use transport=dds") from exc
    return rclpy


def ros_class(msg_type: type[IdlStruct]) -> type:
    """hw.msgs.JointState -> sensor_msgs.msg.JointState."""
    pkg, _, name = ros_type_name(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def to_ros(msg: IdlStruct) -> Any:
    out = ros_class(type(msg))()
    for name in msg.__dataclass_fields__:
        value = getattr(msg, name)
        if isinstance(value, IdlStruct):
            value = to_ros(value)
        elif isinstance(value, list) and value and isinstance(value[0], IdlStruct):
            value = [to_ros(v) for v in value]
        elif isinstance(value, bytes | bytearray):
            value = array.array("B", value)
        setattr(out, name, value)
    return out


_BY_ROS_NAME = {ros_type_name(m): m for m in MESSAGE_TYPES}


def from_ros(ros_msg: Any) -> IdlStruct:
    cls = type(ros_msg)
    msg_type = _BY_ROS_NAME[f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"]
    values = {}
    for name in msg_type.__dataclass_fields__:
        value = getattr(ros_msg, name)
        if hasattr(value, "get_fields_and_field_types"):
            value = from_ros(value)
        elif isinstance(value, list | tuple) and value and hasattr(value[0], "get_fields_and_field_types"):
            value = [from_ros(v) for v in value]
        elif isinstance(value, array.array | bytes | list | tuple) or hasattr(value, "tolist"):
            value = list(value)
        values[name] = value
    return msg_type(**values)


def ros_qos(qos: QoS) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE,
    )


class RclpyTransport:
    """`args`: the process argv holding `--ros-args ...` (names, parameter files, remappings from ros2 launch)."""

    def __init__(self, args: list[str] | None = None):
        rclpy = _rclpy()
        from rclpy.executors import SingleThreadedExecutor
        if not rclpy.ok():
            rclpy.init(args=args)
        self._executor = SingleThreadedExecutor()
        self._handles: list[RclpyNodeHandle] = []
        self._shutdown = False

    def create_node(self, name: str, parameters: Mapping[str, Any] | None = None,
                    remappings: Mapping[str, str] | None = None) -> RclpyNodeHandle:
        cli_args = ["--ros-args"] + [a for src, dst in (remappings or {}).items() for a in ("-r", f"{src}:={dst}")]
        node = _rclpy().create_node(name, cli_args=cli_args if remappings else None)
        self._executor.add_node(node)
        handle = RclpyNodeHandle(node, name, parameters, remappings)
        self._handles.append(handle)
        return handle

    def now(self) -> float:
        return time.monotonic()

    def spin(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        rclpy = _rclpy()
        end = None if timeout is None else time.monotonic() + timeout
        while rclpy.ok() and not self._shutdown and not (until is not None and until()):
            if end is not None and time.monotonic() >= end:
                return
            self._executor.spin_once(timeout_sec=0.1)

    def shutdown(self) -> None:
        self._shutdown = True

    def close(self) -> None:
        for handle in self._handles:
            handle.destroy()
        rclpy = _rclpy()
        if rclpy.ok():
            rclpy.shutdown()


class _RclpyPublisher:
    def __init__(self, publisher: Any, topic: str):
        self._publisher, self.topic = publisher, topic

    def publish(self, msg: M) -> None:
        self._publisher.publish(to_ros(msg))

    def subscription_count(self) -> int:
        return self._publisher.get_subscription_count()


class _RclpySubscription:
    def __init__(self, node: Any, subscription: Any, topic: str):
        self._node, self._subscription, self.topic = node, subscription, topic

    def publisher_count(self) -> int:
        return self._node.count_publishers(self.topic)


class RclpyNodeHandle(NodeHandle):
    def __init__(self, node: Any, name: str, parameters: Mapping[str, Any] | None,
                 remappings: Mapping[str, str] | None):
        super().__init__(name, parameters, remappings)
        self.node = node

    def resolve(self, topic: str) -> str:
        super().resolve(topic)  # same name checks; rclpy applies the remappings itself
        return topic

    def lookup_parameter(self, name: str, default: Any) -> Any:
        """Declared with ROS, so `ros2 param` sees it and launch/--params-file values win over the spec's."""
        value = self.parameters.get(name, default)
        if value is MISSING:
            value = self.node.declare_parameter(name).value  # only a --params-file value can fill it
            return MISSING if value is None else value
        return self.node.declare_parameter(name, list(value) if isinstance(value, tuple) else value).value

    def publisher(self, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> _RclpyPublisher:
        return _RclpyPublisher(self.node.create_publisher(ros_class(msg_type), self.resolve(topic), ros_qos(qos)),
                               topic)

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> _RclpySubscription:
        sub = self.node.create_subscription(ros_class(msg_type), self.resolve(topic),
                                            lambda ros_msg: callback(from_ros(ros_msg)), ros_qos(qos))
        return _RclpySubscription(self.node, sub, topic)

    def timer(self, period_s: float, callback: Callable[[], None]) -> Any:
        return self.node.create_timer(period_s, callback)  # rclpy timers have cancel()

    def now(self) -> float:
        return time.monotonic()

    def wall_time(self) -> float:
        return seconds_of(from_ros(self.node.get_clock().now().to_msg()))

    def destroy(self) -> None:
        self.node.destroy_node()

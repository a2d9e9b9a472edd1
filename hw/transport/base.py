"""The small interface every node is written against: publish, subscribe with QoS, timers, parameters, shutdown.

A transport owns the clock and the executor of one process; `transport.create_node(name, parameters, remappings)`
returns a `NodeHandle`, the only thing node code touches. Three transports implement it (in-process for unit tests,
Cyclone DDS speaking the ROS 2 wire format, and rclpy), so the same node class runs on all three.

Callbacks (subscriptions and timers) of all nodes of a transport run on one thread, the one that calls `spin`, like
rclpy's single-threaded executor: node code needs no locks. Publishing is thread-safe.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cyclonedds.idl import IdlStruct

from robot_rl.errors import UserError

M = TypeVar("M", bound=IdlStruct)
P = TypeVar("P")
MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class QoS:
    """The QoS that matters on a robot: reliability, keep-last depth, and whether late joiners get the last samples.

    Matching follows DDS: a reliable subscription never matches a best-effort publisher.
    """

    reliable: bool = True
    depth: int = 10
    transient_local: bool = False


RELIABLE = QoS()  # ROS 2's default profile: reliable, keep last 10, volatile
SENSOR_DATA = QoS(reliable=False, depth=5)  # rclpy's qos_profile_sensor_data; matches reliable publishers too
LATEST = QoS(reliable=True, depth=1)  # commands: only the newest one may act on the robot
LATCHED = QoS(reliable=True, depth=1, transient_local=True)  # a late subscriber still gets the last value


def qos_compatible(publisher: QoS, subscription: QoS) -> bool:
    """DDS's request/offer rule for the two policies we use."""
    reliability_ok = publisher.reliable or not subscription.reliable
    durability_ok = publisher.transient_local or not subscription.transient_local
    return reliability_ok and durability_ok


class Publisher(Protocol[M]):
    topic: str

    def publish(self, msg: M) -> None: ...

    def subscription_count(self) -> int:
        """Matched subscriptions (in this process or others): lets a node wait until the graph is connected."""
        ...


class Subscription(Protocol):
    topic: str

    def publisher_count(self) -> int: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class ScheduledTimer:
    """A periodic timer as the executors keep it (a heap ordered by due time, then creation)."""

    def __init__(self, due: float, seq: int, period: float, callback: Callable[[], None]):
        if period <= 0:
            raise ValueError(f"timer period must be positive, got {period}")
        self.due, self.seq, self.period, self.callback, self.cancelled = due, seq, period, callback, False

    def __lt__(self, other: ScheduledTimer) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class Transport(Protocol):
    """One per process: the clock, the executor, and the factory of node handles."""

    def create_node(self, name: str, parameters: Mapping[str, Any] | None = None,
                    remappings: Mapping[str, str] | None = None) -> NodeHandle: ...

    def now(self) -> float:
        """Monotonic seconds, the clock of timers and watchdogs (virtual in-process)."""
        ...

    def spin(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Run callbacks until `shutdown()`, `until()` is true, or `timeout` seconds passed."""
        ...

    def shutdown(self) -> None:
        """Make `spin` return; safe from any thread and from signal handlers."""
        ...

    def close(self) -> None: ...


class NodeHandle:
    """A node's view of its transport. Subclasses implement the I/O; this base does names, remapping, parameters."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None,
                 remappings: Mapping[str, str] | None = None):
        self.name = name
        self.parameters = dict(parameters or {})
        self.remappings = dict(remappings or {})
        self.declared: set[str] = set()
        self.logger = logging.getLogger(f"robot_rl.hw.{name}")

    # -- I/O, per transport -----------------------------------------------------------------------------------------
    def publisher(self, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> Publisher[M]:
        raise NotImplementedError

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> Subscription:
        raise NotImplementedError

    def timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def wall_time(self) -> float:
        """Seconds since the epoch, for message stamps (virtual in-process)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Release this node's publishers, subscriptions and timers."""

    # -- shared -----------------------------------------------------------------------------------------------------
    def resolve(self, topic: str) -> str:
        """Apply this node's remappings (exact topic names, as ROS 2 `-r from:=to`)."""
        if not topic.startswith("/"):
            raise ValueError(f"node {self.name!r}: topic {topic!r} must be absolute (start with '/')")
        return self.remappings.get(topic, topic)

    def lookup_parameter(self, name: str, default: Any) -> Any:
        """The raw value of a parameter (rclpy overrides this to declare it with ROS)."""
        return self.parameters.get(name, default)

    def param(self, name: str, hint: Any, default: Any = MISSING) -> Any:
        """Declare a parameter of type `hint` (bool, int, float, str, tuple[...]/list[...] of those)."""
        self.declared.add(name)
        value = self.lookup_parameter(name, default)
        if value is MISSING:
            raise UserError(f"node {self.name!r}: parameter {name!r} is required; set it in the graph config")
        return coerce_parameter(f"node {self.name!r}: parameter {name!r}", value, hint)

    def undeclared_parameters(self) -> list[str]:
        """Parameters given to the node that it never declared: usually a typo in the graph config."""
        return sorted(set(self.parameters) - self.declared)


def declare_parameters(handle: NodeHandle, params_type: type[P]) -> P:
    """Fill a parameters dataclass: every field is one ROS parameter, its default the dataclass default."""
    hints = typing.get_type_hints(params_type)
    values = {}
    for f in dataclasses.fields(params_type):  # type: ignore[arg-type]
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        values[f.name] = handle.param(f.name, hints[f.name], default)
    try:
        return params_type(**values)
    except ValueError as exc:  # the dataclass's own consistency checks: still a config error
        raise UserError(f"node {handle.name!r}: {exc}") from exc


def coerce_parameter(what: str, value: Any, hint: Any) -> Any:
    """Check and convert a parameter value to its declared type; ints are accepted where floats are declared."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"{what} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        items = [coerce_parameter(what, v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{what} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{what} must be an integer, got {value!r}")
        return value
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise UserError(f"{what} must be a {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"{what}: unsupported parameter type {hint}; ROS parameters are bool/int/float/str or lists")

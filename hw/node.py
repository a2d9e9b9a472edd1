"""The base class of every robot_rl node: node code written once, run on any transport.

A node subclass wires itself in `__init__(handle)` (parameters, publishers, subscriptions, timers) and reacts in
callbacks; it never imports a transport. Callbacks of one process run on one thread. `close()` is called once when
the process shuts down (flush files there). See `hw.nodes.safety` for an example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hw.msgs import Time, stamp_of
from hw.transport.base import RELIABLE, M, NodeHandle, Publisher, QoS, Subscription, Timer, declare_parameters

P = TypeVar("P")


class Node:
    def __init__(self, handle: NodeHandle):
        self.handle = handle

    @property
    def name(self) -> str:
        return self.handle.name

    def declare(self, params_type: type[P]) -> P:
        """Declare every field of a parameters dataclass as a ROS parameter and return the filled dataclass."""
        return declare_parameters(self.handle, params_type)

    def publisher(self, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> Publisher[M]:
        return self.handle.publisher(topic, msg_type, qos)

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> Subscription:
        return self.handle.subscribe(topic, msg_type, callback, qos)

    def timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        return self.handle.timer(period_s, callback)

    def now(self) -> float:
        """Monotonic seconds (virtual in-process): for rates, timeouts and watchdogs."""
        return self.handle.now()

    def stamp(self) -> Time:
        """Wall-clock time as a message stamp."""
        return stamp_of(self.handle.wall_time())

    @property
    def log(self):
        return self.handle.logger

    def close(self) -> None:
        """Called once at shutdown, before the handle is destroyed."""

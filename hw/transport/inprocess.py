"""In-process transport for unit tests: a virtual clock, deterministic delivery, and real CDR on every message.

Time only moves when the test calls `advance(seconds)`, which runs due timers in order and delivers every pending
message after each one; `deliver()` delivers without moving time. Each message is serialized on publish and
deserialized per subscriber, exactly as on DDS, so a message that would not survive the wire fails here too and a
node never shares a mutable object with another. Keep-last depth, transient-local history and the DDS QoS matching
rule are honoured, so a QoS mismatch that would silently cut a topic on the robot also cuts it here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cyclonedds.idl import IdlStruct

from hw.transport.base import RELIABLE, M, NodeHandle, QoS, ScheduledTimer, qos_compatible

EPOCH = 1_700_000_000.0  # wall time at virtual time 0, so stamps look like real ones


@dataclass(eq=False)
class _Sub:
    topic: str
    msg_type: type[IdlStruct]
    callback: Callable[[Any], None]
    qos: QoS
    queue: deque = field(default_factory=deque)
    active: bool = True


@dataclass(eq=False)
class _Pub:
    topic: str
    msg_type: type[IdlStruct]
    qos: QoS
    history: deque = field(default_factory=deque)  # transient-local: the last `depth` payloads
    active: bool = True


class InProcessTransport:
    """All nodes of a test in one object; see the module docstring."""

    def __init__(self, start_time: float = 0.0):
        self._time = start_time
        self._lock = threading.RLock()
        self._types: dict[str, type[IdlStruct]] = {}
        self._subs: dict[str, list[_Sub]] = {}
        self._pubs: dict[str, list[_Pub]] = {}
        self._ready: deque[_Sub] = deque()
        self._timers: list[ScheduledTimer] = []
        self._seq = itertools.count()
        self._shutdown = False
        self.published: dict[str, int] = {}  # topic -> messages published (for tests)

    # -- Transport --------------------------------------------------------------------------------------------------
    def create_node(self, name: str, parameters: Mapping[str, Any] | None = None,
                    remappings: Mapping[str, str] | None = None) -> InProcessNodeHandle:
        return InProcessNodeHandle(self, name, parameters, remappings)

    def now(self) -> float:
        return self._time

    def spin(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Deliver pending messages; with a timeout, also advance virtual time by it (stopping early on `until`)."""
        self.deliver()
        if timeout is not None:
            self.advance(timeout, until)

    def shutdown(self) -> None:
        self._shutdown = True

    def close(self) -> None:
        with self._lock:
            self._subs.clear()
            self._pubs.clear()
            self._timers.clear()
            self._ready.clear()

    # -- test driving ----------------------------------------------------------------------------------------------
    def deliver(self) -> int:
        """Run subscription callbacks for every pending message (including ones they publish); returns how many."""
        count = 0
        while True:
            with self._lock:
                sub = self._ready.popleft() if self._ready else None
                payload = sub.queue.popleft() if sub is not None and sub.queue else None
            if sub is None:
                return count
            if payload is None or not sub.active:
                continue  # its sample was pushed out by newer ones (keep-last), or it was destroyed
            sub.callback(sub.msg_type.deserialize(payload))
            count += 1

    def advance(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Move virtual time forward, firing due timers in order and delivering messages after each."""
        end = self._time + seconds
        self.deliver()
        while not self._shutdown and not (until is not None and until()):
            with self._lock:
                while self._timers and self._timers[0].cancelled:
                    heapq.heappop(self._timers)
                if not self._timers or self._timers[0].due > end:
                    break
                timer = heapq.heappop(self._timers)
                self._time = max(self._time, timer.due)
                timer.due += timer.period
                heapq.heappush(self._timers, timer)
            timer.callback()
            self.deliver()
        if not self._shutdown and not (until is not None and until()):
            self._time = max(self._time, end)
        self.deliver()

    # -- used by handles ---------------------------------------------------------------------------------------------
    def _check_type(self, topic: str, msg_type: type[IdlStruct]) -> None:
        known = self._types.setdefault(topic, msg_type)
        if known is not msg_type:
            raise TypeError(f"topic {topic} carries {known.__name__}, not {msg_type.__name__}")

    def _add_pub(self, topic: str, msg_type: type[IdlStruct], qos: QoS) -> _Pub:
        with self._lock:
            self._check_type(topic, msg_type)
            pub = _Pub(topic, msg_type, qos, deque(maxlen=qos.depth))
            self._pubs.setdefault(topic, []).append(pub)
            return pub

    def _add_sub(self, topic: str, msg_type: type[IdlStruct], callback: Callable[[Any], None], qos: QoS) -> _Sub:
        with self._lock:
            self._check_type(topic, msg_type)
            sub = _Sub(topic, msg_type, callback, qos, deque(maxlen=qos.depth))
            self._subs.setdefault(topic, []).append(sub)
            if qos.transient_local:
                for pub in self._pubs.get(topic, []):
                    if pub.active and pub.qos.transient_local and qos_compatible(pub.qos, qos):
                        for payload in pub.history:
                            self._enqueue(sub, payload)
            return sub

    def _enqueue(self, sub: _Sub, payload: bytes) -> None:
        sub.queue.append(payload)
        self._ready.append(sub)

    def _publish(self, pub: _Pub, msg: IdlStruct) -> None:
        if not isinstance(msg, pub.msg_type):
            raise TypeError(f"{pub.topic} carries {pub.msg_type.__name__}, got {type(msg).__name__}")
        payload = msg.serialize()
        with self._lock:
            self.published[pub.topic] = self.published.get(pub.topic, 0) + 1
            if pub.qos.transient_local:
                pub.history.append(payload)
            for sub in self._subs.get(pub.topic, []):
                if sub.active and qos_compatible(pub.qos, sub.qos):
                    self._enqueue(sub, payload)

    def _matched_subs(self, pub: _Pub) -> int:
        return sum(s.active and qos_compatible(pub.qos, s.qos) for s in self._subs.get(pub.topic, []))

    def _matched_pubs(self, sub: _Sub) -> int:
        return sum(p.active and qos_compatible(p.qos, sub.qos) for p in self._pubs.get(sub.topic, []))

    def _add_timer(self, period_s: float, callback: Callable[[], None]) -> ScheduledTimer:
        with self._lock:
            timer = ScheduledTimer(self._time + period_s, next(self._seq), period_s, callback)
            heapq.heappush(self._timers, timer)
            return timer


class _InProcessPublisher:
    def __init__(self, transport: InProcessTransport, pub: _Pub):
        self._transport, self._pub, self.topic = transport, pub, pub.topic

    def publish(self, msg: M) -> None:
        self._transport._publish(self._pub, msg)

    def subscription_count(self) -> int:
        return self._transport._matched_subs(self._pub)


class _InProcessSubscription:
    def __init__(self, transport: InProcessTransport, sub: _Sub):
        self._transport, self._sub, self.topic = transport, sub, sub.topic

    def publisher_count(self) -> int:
        return self._transport._matched_pubs(self._sub)


class InProcessNodeHandle(NodeHandle):
    def __init__(self, transport: InProcessTransport, name: str, parameters: Mapping[str, Any] | None,
                 remappings: Mapping[str, str] | None):
        super().__init__(name, parameters, remappings)
        self._transport = transport
        self._owned: list[Any] = []

    def publisher(self, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> _InProcessPublisher:
        pub = self._transport._add_pub(self.resolve(topic), msg_type, qos)
        self._owned.append(pub)
        return _InProcessPublisher(self._transport, pub)

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> _InProcessSubscription:
        sub = self._transport._add_sub(self.resolve(topic), msg_type, callback, qos)
        self._owned.append(sub)
        return _InProcessSubscription(self._transport, sub)

    def timer(self, period_s: float, callback: Callable[[], None]) -> ScheduledTimer:
        timer = self._transport._add_timer(period_s, callback)
        self._owned.append(timer)
        return timer

    def now(self) -> float:
        return self._transport.now()

    def wall_time(self) -> float:
        return EPOCH + self._transport.now()

    def destroy(self) -> None:
        for thing in self._owned:
            if isinstance(thing, ScheduledTimer):
                thing.cancel()
            else:
                thing.active = False
        self._owned.clear()

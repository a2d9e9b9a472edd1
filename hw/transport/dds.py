"""Cyclone DDS transport: ROS 2's wire format without a ROS install (PyPI `cyclonedds`).

Topics are `rt/<topic>`, types the `hw.msgs` structs with ROS 2 type names, samples plain CDR (XCDR1) as ROS 2
sends them, so these nodes and ROS 2 nodes on the same domain id see each other. One participant per process;
every node of the process shares it and one executor: `spin` waits on a DDS WaitSet (a read condition per
subscription and a guard condition for shutdown), takes what arrived and runs the due timers, all on the calling
thread.

`loopback_config()` keeps a process on the loopback interface with unicast discovery: tests and benchmarks on one
machine then neither leak onto the network nor depend on multicast being available.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from cyclonedds.core import GuardCondition, InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from hw.msgs import dds_topic
from hw.transport.base import RELIABLE, M, NodeHandle, QoS, ScheduledTimer
from robot_rl.errors import UserError

MAX_DOMAIN_ID = 232  # DDS port arithmetic (7400 + 250 * id + ...) stays below 65535 up to here
_TAKE_BATCH = 64
_DOMAINS: dict[int, Domain] = {}  # a domain created with an explicit config must outlive its participants
_DOMAINS_LOCK = threading.Lock()


def loopback_config(max_participants: int = 64) -> str:
    """Cyclone DDS XML: loopback only, no multicast, unicast discovery of up to `max_participants` per host."""
    return (
        "<CycloneDDS><Domain Id='any'>"
        "<General><Interfaces><NetworkInterface name='lo'/></Interfaces>"
        "<AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{max_participants}</MaxAutoParticipantIndex>"
        "<Peers><Peer address='127.0.0.1'/></Peers></Discovery>"
        "</Domain></CycloneDDS>"
    )


def default_domain_id() -> int:
    """ROS 2's convention: `ROS_DOMAIN_ID`, else 0."""
    value = os.environ.get("ROS_DOMAIN_ID", "0") or "0"
    if not value.isdigit():
        raise UserError(f"ROS_DOMAIN_ID={value!r} is not a number; set it to 0..{MAX_DOMAIN_ID}")
    return int(value)


def dds_qos(qos: QoS) -> Qos:
    reliability = Policy.Reliability.Reliable(duration(milliseconds=100)) if qos.reliable else \
        Policy.Reliability.BestEffort
    durability = Policy.Durability.TransientLocal if qos.transient_local else Policy.Durability.Volatile
    return Qos(reliability, durability, Policy.History.KeepLast(qos.depth),
               Policy.DataRepresentation(use_cdrv0_representation=True))  # XCDR1, what ROS 2 sends


class DdsTransport:
    """See the module docstring. `domain_id=None` follows ROS_DOMAIN_ID; `loopback=True` uses `loopback_config()`."""

    def __init__(self, domain_id: int | None = None, loopback: bool = False, config: str | None = None):
        self.domain_id = default_domain_id() if domain_id is None else domain_id
        if not 0 <= self.domain_id <= MAX_DOMAIN_ID:
            raise UserError(f"DDS domain id {self.domain_id} is out of range; use 0..{MAX_DOMAIN_ID}")
        xml = config or (loopback_config() if loopback else None)
        if xml is not None:
            with _DOMAINS_LOCK:
                if self.domain_id not in _DOMAINS:
                    _DOMAINS[self.domain_id] = Domain(self.domain_id, xml)
        self._participant = DomainParticipant(self.domain_id)
        self._waitset = WaitSet(self._participant)
        self._guard = GuardCondition(self._participant)
        self._waitset.attach(self._guard)
        self._lock = threading.Lock()
        self._topics: dict[str, Topic] = {}
        self._readers: list[_DdsSubscription] = []
        self._timers: list[ScheduledTimer] = []
        self._seq = itertools.count()
        self._shutdown = threading.Event()
        self._handles: list[DdsNodeHandle] = []

    # -- Transport --------------------------------------------------------------------------------------------------
    def create_node(self, name: str, parameters: Mapping[str, Any] | None = None,
                    remappings: Mapping[str, str] | None = None) -> DdsNodeHandle:
        handle = DdsNodeHandle(self, name, parameters, remappings)
        self._handles.append(handle)
        return handle

    def now(self) -> float:
        return time.monotonic()

    def spin(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._shutdown.is_set() and not (until is not None and until()):
            remaining = 0.1 if end is None else end - time.monotonic()
            if remaining <= 0:
                return
            self.spin_once(min(remaining, 0.1))

    def spin_once(self, timeout: float) -> None:
        """Wait up to `timeout` (or the next timer) for data, then run the callbacks that are due."""
        wait = timeout
        with self._lock:
            if self._timers:
                wait = min(wait, self._timers[0].due - time.monotonic())
        if wait > 0:
            self._waitset.wait(duration(seconds=wait))
        self._guard.take()
        for sub in list(self._readers):
            if sub.active:
                sub.drain()
        self._run_due_timers()

    def shutdown(self) -> None:
        self._shutdown.set()
        self._guard.set(True)

    def close(self) -> None:
        self.shutdown()
        for handle in self._handles:
            handle.destroy()
        self._handles.clear()
        self._topics.clear()
        self._waitset = self._guard = self._participant = None  # entities are deleted with their Python objects

    # -- used by handles ---------------------------------------------------------------------------------------------
    def _topic(self, topic: str, msg_type: type[IdlStruct]) -> Topic:
        with self._lock:
            existing = self._topics.get(topic)
            if existing is None:
                existing = self._topics[topic] = Topic(self._participant, dds_topic(topic), msg_type)
            elif existing.data_type is not msg_type:
                raise TypeError(f"topic {topic} carries {existing.data_type.__name__}, not {msg_type.__name__}")
            return existing

    def _add_reader(self, sub: _DdsSubscription) -> None:
        with self._lock:
            self._readers.append(sub)
            self._waitset.attach(sub.condition)

    def _remove_reader(self, sub: _DdsSubscription) -> None:
        with self._lock:
            if sub in self._readers:
                self._readers.remove(sub)
                self._waitset.detach(sub.condition)

    def _add_timer(self, period_s: float, callback: Callable[[], None]) -> ScheduledTimer:
        timer = ScheduledTimer(time.monotonic() + period_s, next(self._seq), period_s, callback)
        with self._lock:
            heapq.heappush(self._timers, timer)
        self._guard.set(True)  # a spin waiting on an older deadline re-plans
        return timer

    def _run_due_timers(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                while self._timers and self._timers[0].cancelled:
                    heapq.heappop(self._timers)
                if not self._timers or self._timers[0].due > now:
                    return
                timer = heapq.heappop(self._timers)
                # Fixed rate without drift; after a stall, skip the missed ticks instead of bursting through them.
                timer.due += timer.period
                if timer.due <= now:
                    timer.due = now + timer.period
                heapq.heappush(self._timers, timer)
            timer.callback()


class _DdsPublisher:
    def __init__(self, writer: DataWriter, topic: str):
        self._writer, self.topic = writer, topic

    def publish(self, msg: M) -> None:
        self._writer.write(msg)

    def subscription_count(self) -> int:
        return len(self._writer.get_matched_subscriptions())


class _DdsSubscription:
    def __init__(self, reader: DataReader, topic: str, callback: Callable[[Any], None]):
        self.reader, self.topic, self.callback, self.active = reader, topic, callback, True
        self.condition = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any)

    def drain(self) -> None:
        while True:
            samples = self.reader.take(N=_TAKE_BATCH)
            for sample in samples:
                if sample.sample_info.valid_data:  # invalid samples only report a writer going away
                    self.callback(sample)
            if len(samples) < _TAKE_BATCH:
                return

    def publisher_count(self) -> int:
        return len(self.reader.get_matched_publications())


class DdsNodeHandle(NodeHandle):
    def __init__(self, transport: DdsTransport, name: str, parameters: Mapping[str, Any] | None,
                 remappings: Mapping[str, str] | None):
        super().__init__(name, parameters, remappings)
        self._transport = transport
        self._writers: list[DataWriter] = []
        self._subs: list[_DdsSubscription] = []
        self._timers: list[ScheduledTimer] = []

    def publisher(self, topic: str, msg_type: type[M], qos: QoS = RELIABLE) -> _DdsPublisher:
        resolved = self.resolve(topic)
        writer = DataWriter(self._transport._participant, self._transport._topic(resolved, msg_type), dds_qos(qos))
        self._writers.append(writer)
        return _DdsPublisher(writer, resolved)

    def subscribe(self, topic: str, msg_type: type[M], callback: Callable[[M], None],
                  qos: QoS = RELIABLE) -> _DdsSubscription:
        resolved = self.resolve(topic)
        reader = DataReader(self._transport._participant, self._transport._topic(resolved, msg_type), dds_qos(qos))
        sub = _DdsSubscription(reader, resolved, callback)
        self._transport._add_reader(sub)
        self._subs.append(sub)
        return sub

    def timer(self, period_s: float, callback: Callable[[], None]) -> ScheduledTimer:
        timer = self._transport._add_timer(period_s, callback)
        self._timers.append(timer)
        return timer

    def now(self) -> float:
        return time.monotonic()

    def wall_time(self) -> float:
        return time.time()

    def destroy(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for sub in self._subs:
            sub.active = False
            self._transport._remove_reader(sub)
        self._timers.clear()
        self._subs.clear()
        self._writers.clear()

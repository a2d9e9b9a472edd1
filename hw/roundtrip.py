"""DDS loopback round trip between two processes, through our transport: `python -m hw.roundtrip [--n N]`.

A ping node sends a Float64MultiArray (the size of a joint command); an echo node in a second process sends it
straight back; the ping node sends the next one from the callback that received the echo. The round trip includes
CDR encoding, Cyclone DDS on loopback both ways and our executors: the floor under `robot-rl bench control-loop`,
whose obs -> command path crosses two more hops like these. `--raw` measures bare cyclonedds (a writer, a reader
and a WaitSet on each side, no executor, no layout) for comparison: the difference is what our layer costs.
Prints one JSON line (p50/p99 in ms).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import numpy as np

from hw.msgs import Float64MultiArray, float64_array
from hw.node import Node
from hw.transport import RELIABLE, NodeHandle
from hw.transport.dds import DdsTransport

PING, PONG = "/robot_rl/bench/ping", "/robot_rl/bench/pong"


class EchoNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.pub = self.publisher(PONG, Float64MultiArray, RELIABLE)
        self.subscribe(PING, Float64MultiArray, self.pub.publish, RELIABLE)


class PingNode(Node):
    def __init__(self, handle: NodeHandle, n: int, warmup: int, width: int):
        super().__init__(handle)
        self.n, self.warmup, self.width = n, warmup, width
        self.pub = self.publisher(PING, Float64MultiArray, RELIABLE)
        self.sub = self.subscribe(PONG, Float64MultiArray, self._on_pong, RELIABLE)
        self.rtts: list[float] = []
        self.sent_at = 0.0
        self.seq = 0

    def send(self) -> None:
        self.seq += 1
        msg = float64_array(np.full(self.width, float(self.seq)))
        self.sent_at = time.perf_counter()
        self.pub.publish(msg)

    def _on_pong(self, msg: Float64MultiArray) -> None:
        now = time.perf_counter()
        if int(msg.data[0]) != self.seq:
            return  # a late duplicate from a resend: not the one in flight
        if self.seq > self.warmup:
            self.rtts.append(now - self.sent_at)
        if len(self.rtts) < self.n:
            self.send()

    @property
    def done(self) -> bool:
        return len(self.rtts) >= self.n


def echo_main(domain_id: int) -> None:
    transport = DdsTransport(domain_id, loopback=True)
    EchoNode(transport.create_node("echo"))
    transport.spin()


def _raw_endpoints(domain_id: int, send: str, receive: str):
    """Bare cyclonedds writer/reader/WaitSet on our loopback domain (the `--raw` comparison)."""
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from hw.msgs import dds_topic
    from hw.transport.dds import dds_qos

    DdsTransport(domain_id, loopback=True)  # registers the loopback domain config
    dp = DomainParticipant(domain_id)
    writer = DataWriter(dp, Topic(dp, dds_topic(send), Float64MultiArray), dds_qos(RELIABLE))
    reader = DataReader(dp, Topic(dp, dds_topic(receive), Float64MultiArray), dds_qos(RELIABLE))
    waitset = WaitSet(dp)
    waitset.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
    return dp, writer, reader, waitset


def raw_echo_main(domain_id: int) -> None:
    from cyclonedds.util import duration
    _dp, writer, reader, waitset = _raw_endpoints(domain_id, PONG, PING)
    while True:
        waitset.wait(duration(seconds=1))
        for sample in reader.take(N=16):
            if sample.sample_info.valid_data:
                writer.write(sample)


def measure_raw_roundtrip(n: int, warmup: int, width: int, domain_id: int, timeout_s: float) -> list[float]:
    from cyclonedds.util import duration
    _dp, writer, reader, waitset = _raw_endpoints(domain_id, PING, PONG)
    started = time.perf_counter()
    while not (writer.get_matched_subscriptions() and reader.get_matched_publications()):
        if time.perf_counter() - started > 60:
            raise RuntimeError("the echo process never matched (DDS discovery failed)")
        time.sleep(0.05)
    time.sleep(0.2)
    rtts = []
    for seq in range(1, n + warmup + 1):
        sent_at = time.perf_counter()
        writer.write(Float64MultiArray(data=[float(seq)] * width))
        while time.perf_counter() - sent_at < 0.2:
            waitset.wait(duration(seconds=0.2))
            if any(s.sample_info.valid_data and int(s.data[0]) == seq for s in reader.take(N=16)):
                if seq > warmup:
                    rtts.append(time.perf_counter() - sent_at)
                break
        if time.perf_counter() - started > timeout_s:
            break
    return rtts


def measure_roundtrip(n: int = 2000, warmup: int = 100, width: int = 7, domain_id: int | None = None,
                      timeout_s: float = 120.0, raw: bool = False) -> dict:
    """Round-trip times of `n` pings to an echo process; returns p50/p99/mean in ms."""
    domain_id = random.randint(100, 232) if domain_id is None else domain_id
    echo = subprocess.Popen([sys.executable, "-m", "hw.roundtrip", "--echo", "--domain-id", str(domain_id)]
                            + (["--raw"] if raw else []))
    if raw:
        try:
            rtts = measure_raw_roundtrip(n, warmup, width, domain_id, timeout_s)
        finally:
            echo.terminate()
            echo.wait(timeout=10)
        return _summary(rtts, width, "raw cyclonedds")
    transport = DdsTransport(domain_id, loopback=True)
    try:
        ping = PingNode(transport.create_node("ping"), n, warmup, width)
        transport.spin(until=lambda: ping.pub.subscription_count() > 0 and ping.sub.publisher_count() > 0,
                       timeout=60.0)
        if ping.pub.subscription_count() == 0:
            raise RuntimeError("the echo process never matched (DDS discovery failed)")
        time.sleep(0.2)  # let the echo's reader match ours both ways before timing
        ping.send()
        started = time.perf_counter()
        while not ping.done and time.perf_counter() - started < timeout_s:
            transport.spin_once(0.2)
            if not ping.done and time.perf_counter() - ping.sent_at > 0.2:
                ping.send()  # lost before discovery settled: send the next one
    finally:
        transport.close()
        echo.terminate()
        echo.wait(timeout=10)
    return _summary(ping.rtts, width, "hw.transport DdsTransport")


def _summary(rtts: list[float], width: int, path: str) -> dict:
    rtt_ms = np.asarray(rtts) * 1e3
    return {"roundtrip_ms_p50": round(float(np.percentile(rtt_ms, 50)), 4),
            "roundtrip_ms_p99": round(float(np.percentile(rtt_ms, 99)), 4),
            "roundtrip_ms_mean": round(float(rtt_ms.mean()), 4), "samples": int(rtt_ms.size),
            "payload_floats": width, "path": path}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hw.roundtrip", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--width", type=int, default=7, help="floats per message")
    parser.add_argument("--domain-id", type=int, default=None)
    parser.add_argument("--raw", action="store_true", help="bare cyclonedds, without our transport")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        (raw_echo_main if args.raw else echo_main)(args.domain_id)
        return
    print(json.dumps(measure_roundtrip(args.n, width=args.width, domain_id=args.domain_id, raw=args.raw)))


if __name__ == "__main__":
    main()

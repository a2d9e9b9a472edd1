"""Transports behind one interface (see `hw.transport.base`): in-process, Cyclone DDS, rclpy."""

from __future__ import annotations

from hw.transport.base import (
    LATCHED,
    LATEST,
    RELIABLE,
    SENSOR_DATA,
    NodeHandle,
    Publisher,
    QoS,
    Subscription,
    Timer,
    Transport,
    declare_parameters,
    qos_compatible,
)
from hw.transport.inprocess import InProcessTransport
from robot_rl.errors import UserError

TRANSPORTS = ("dds", "rclpy", "inprocess")


def make_transport(kind: str, domain_id: int | None = None, loopback: bool = False,
                   ros_args: list[str] | None = None) -> Transport:
    """`dds` (Cyclone DDS, no ROS install), `rclpy` (ROS 2 installed) or `inprocess` (unit tests)."""
    if kind == "dds":
        from hw.transport.dds import DdsTransport
        return DdsTransport(domain_id=domain_id, loopback=loopback)
    if kind == "rclpy":
        from hw.transport.ros import RclpyTransport
        return RclpyTransport(args=ros_args)
    if kind == "inprocess":
        return InProcessTransport()
    raise UserError(f"unknown transport {kind!r}; choose one of: {', '.join(TRANSPORTS)}")


__all__ = [
    "LATCHED", "LATEST", "RELIABLE", "SENSOR_DATA", "TRANSPORTS", "InProcessTransport", "NodeHandle", "Publisher",
    "QoS", "Subscription", "Timer", "Transport", "declare_parameters", "make_transport", "qos_compatible",
]

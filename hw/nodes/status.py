"""Node status on `/robot_rl/<node>_status`: one latched JSON String per node, so an operator (or a test) sees
what each node is doing, and every message it dropped, by counter name (`ros2 topic echo` shows it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hw.msgs import String
from hw.node import Node
from hw.transport import LATCHED


def status_topic(node_name: str) -> str:
    return f"/robot_rl/{node_name}_status"


def parse_status(msg: String) -> dict[str, Any] | None:
    try:
        status = json.loads(msg.data)
    except json.JSONDecodeError:
        return None
    return status if isinstance(status, dict) else None


class StatusReporter:
    """Publishes `snapshot()` every `period_s` and whenever `publish()` is called (state changes worth telling)."""

    def __init__(self, node: Node, snapshot: Callable[[], dict[str, Any]], period_s: float):
        self._snapshot = snapshot
        self._pub = node.publisher(status_topic(node.name), String, LATCHED)
        node.timer(period_s, self.publish)

    def publish(self) -> None:
        self._pub.publish(String(data=json.dumps(self._snapshot(), default=_plain)))


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as JSON numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)

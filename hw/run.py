"""Run one node in this process: `python -m hw.run --spec JSON [--transport dds|rclpy] [--domain-id N] [--loopback]`.

`hw.graph.node_command` builds this command line for `robot-rl hw up` and for the launch file; under `ros2 launch`
the `--ros-args ...` that launch appends go to rclpy untouched. SIGINT/SIGTERM stop the executor, then the node's
`close()` runs (a recorder flushes there), then the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from hw.graph import NodeSpec, resolve_entry
from hw.node import Node
from hw.transport import TRANSPORTS, Transport, make_transport
from robot_rl.errors import UserError
from robot_rl.scheduling import set_process_scheduling


def build_node(spec: NodeSpec, transport: Transport) -> Node:
    """Create the node of `spec` on `transport`; parameters it never declared are a config error."""
    cls = resolve_entry(spec.entry)
    handle = transport.create_node(spec.name, spec.parameters, spec.remappings)
    node = cls(handle)
    unknown = handle.undeclared_parameters()
    if unknown:
        raise UserError(f"node {spec.name!r} has no parameter(s) {', '.join(unknown)}; check the graph config")
    return node


def run_node(spec: NodeSpec, transport: Transport, until: Callable[[], bool] | None = None,
             timeout: float | None = None) -> None:
    """Build the node, spin until shutdown (signal, `until`, `timeout`), then close node and transport."""
    node = build_node(spec, transport)
    previous = {sig: signal.signal(sig, lambda *_: transport.shutdown()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        transport.spin(until=until, timeout=timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        node.close()
        node.handle.destroy()
        transport.close()


def set_scheduling(spec: NodeSpec) -> None:
    """Apply the spec's `nice` and `realtime` to the whole node process before its transport starts. Without the
    privilege to raise priority the node runs at its default scheduling, and says so."""
    if spec.nice == 0 and spec.realtime == 0:
        return
    try:
        set_process_scheduling(spec.nice, spec.realtime or None)
    except PermissionError:
        logging.getLogger("hw.run").warning(
            "node %r: no permission for nice %d / realtime %d (raising priority needs root or CAP_SYS_NICE); "
            "running at the default scheduling", spec.name, spec.nice, spec.realtime)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the full argv for rclpy (it picks out `--ros-args ... [--]` itself)."""
    ours = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m hw.run", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the node spec as JSON (hw.graph.NodeSpec.to_json)")
    parser.add_argument("--transport", default="dds", choices=TRANSPORTS[:2])
    parser.add_argument("--domain-id", type=int, default=None, help="DDS domain id (default: ROS_DOMAIN_ID or 0)")
    parser.add_argument("--loopback", action="store_true", help="DDS on the loopback interface only")
    return parser.parse_args(ours), argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, ros_argv = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        spec = NodeSpec.from_json(args.spec)
        set_scheduling(spec)
        transport = make_transport(args.transport, domain_id=args.domain_id, loopback=args.loopback,
                                   ros_args=[sys.argv[0], *ros_argv])
        run_node(spec, transport)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

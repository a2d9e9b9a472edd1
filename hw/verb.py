"""`robot-rl hw up | node NAME`: the ROS 2 node graph over Cyclone DDS, without a ROS install.

`up` starts every enabled node of a graph config (`configs/hw/<name>.yaml`, composed by Hydra so any value can be
overridden) as its own process (`hw.launcher`), for `duration` seconds or until Ctrl-C, then stops them (SIGINT:
nodes close cleanly, the recorder discards its unfinished episode). A node that dies is reported and the others keep
running: the safety node holds the robot when its inputs go silent. `node NAME` runs one node in this process, the
same way the launch file's processes do (`python -m hw.run`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robot_rl.errors import UserError

ACTIONS = ("up", "node")


def _domain(domain_id: int | None) -> int:
    from hw.transport.dds import default_domain_id

    return default_domain_id() if domain_id is None else int(domain_id)


def hw_up(graph: Mapping[str, Any], duration: float = 0.0, domain_id: int | None = None, loopback: bool = False,
          log_dir: str | Path | None = "runs/hw/logs") -> dict:
    """Start the graph, wait `duration` seconds (0: until Ctrl-C), stop it; returns each node's exit code."""
    from hw.graph import graph_specs
    from hw.launcher import start_graph, stop

    specs = graph_specs(graph)
    domain = _domain(domain_id)
    started = time.monotonic()
    processes = start_graph(specs, domain, loopback=loopback, log_dir=Path(log_dir) if log_dir else None)
    print(f"hw up: {len(specs)} nodes on DDS domain {domain}{' (loopback)' if loopback else ''}: "
          f"{', '.join(processes)}; logs in {log_dir}", file=sys.stderr)
    reported: set[str] = set()
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            time.sleep(0.2)
            for name, proc in processes.items():
                if proc.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"hw up: node {name} exited with code {proc.returncode}; the others keep running",
                          file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        codes = stop(processes)
    return {"nodes": [s.name for s in specs], "exit_codes": codes, "exited_early": sorted(reported),
            "seconds": round(time.monotonic() - started, 1), "domain_id": domain,
            "log_dir": str(log_dir) if log_dir else None}


def hw_node(graph: Mapping[str, Any], name: str, transport: str = "dds", domain_id: int | None = None,
            loopback: bool = False, duration: float = 0.0) -> dict:
    """Run the graph's node `name` in this process until Ctrl-C (or `duration` seconds)."""
    from hw.graph import graph_specs
    from hw.run import run_node
    from hw.transport import make_transport

    specs = {spec.name: spec for spec in graph_specs(graph)}
    if name not in specs:
        raise UserError(f"the graph has no enabled node {name!r}; its nodes are: {', '.join(specs)}")
    started = time.monotonic()
    bus = make_transport(transport, domain_id=_domain(domain_id) if transport == "dds" else None, loopback=loopback,
                         ros_args=[sys.argv[0]])
    run_node(specs[name], bus, timeout=duration if duration > 0 else None)
    return {"node": name, "seconds": round(time.monotonic() - started, 1)}


def run(cfg: DictConfig) -> dict:
    if cfg.action not in ACTIONS:
        raise UserError(f"hw needs an action: `robot-rl hw up` or `robot-rl hw node NAME` (got {cfg.action!r})")
    graph = OmegaConf.to_container(cfg.hw, resolve=True)
    if cfg.action == "up":
        return hw_up(graph, float(cfg.duration), cfg.domain_id, bool(cfg.loopback), cfg.log_dir)
    if not cfg.node:
        raise UserError("`robot-rl hw node NAME` needs the node's name, e.g. `robot-rl hw node safety`")
    return hw_node(graph, str(cfg.node), str(cfg.transport), cfg.domain_id, bool(cfg.loopback), float(cfg.duration))

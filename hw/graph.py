"""One source of node specs for `robot-rl hw up` (Cyclone DDS) and `ros2 launch launch/robot.launch.py`.

A graph config (`configs/hw/<name>.yaml`) lists nodes; each becomes a `NodeSpec`: a name, the node class as an
entry point (`module:Class`), ROS-typed parameters and topic remappings. `hw up` starts every spec as a process
running `node_command(spec)`; the launch file turns the same specs into `launch_ros` Nodes running the same command
with transport rclpy, handing ROS the same parameters and remappings. Nothing here imports a node class, so specs
build anywhere; `check_entries` imports them when a graph is about to start.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_rl.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "hw"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    entry: str  # "package.module:Class", a subclass of hw.node.Node
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    # Process scheduling, applied by `hw.run` before the node starts (robot_rl.scheduling): `nice` is added to the
    # niceness (positive for nodes off the control path: recorder, learner); `realtime` 1..99 runs the node SCHED_FIFO
    # at that priority (the control path: driver, actor, safety). Raising priority needs root or CAP_SYS_NICE.
    nice: int = 0
    realtime: int = 0

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "entry": self.entry, "parameters": self.parameters,
                           "remappings": self.remappings, "nice": self.nice, "realtime": self.realtime},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeSpec:
        data = json.loads(text)
        return cls(data["name"], data["entry"], dict(data.get("parameters", {})), dict(data.get("remappings", {})),
                   int(data.get("nice", 0)), int(data.get("realtime", 0)))


def ros_parameter(what: str, value: Any) -> Any:
    """A value ROS 2 can hold as a parameter: bool, int, float, str, or a non-empty list of one of them.

    Mixed int/float lists become float lists (YAML writes `[-1, 0.5]`; ROS would reject the mix).
    """
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = list(value)
        if not items:
            raise UserError(f"{what}: ROS parameters cannot be empty lists; leave the parameter out instead")
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return [float(v) for v in items] if any(isinstance(v, float) for v in items) else items
        kinds = {type(v) for v in items}
        if len(kinds) == 1 and kinds <= {bool, str}:
            return items
    raise UserError(f"{what}: {value!r} is not a ROS parameter (bool, int, float, str or a list of one of them)")


def graph_specs(graph: Mapping[str, Any]) -> list[NodeSpec]:
    """Node specs of a graph config (`nodes: {name: {entry, parameters, remappings, nice, realtime}}`)."""
    nodes = graph.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise UserError("graph config has no `nodes:` mapping; see configs/hw/sim_pushcube.yaml")
    specs = []
    for name, node in nodes.items():
        if node is None or not node.get("enabled", True):
            continue
        if "entry" not in node or ":" not in str(node["entry"]):
            raise UserError(f"graph node {name!r} needs `entry: package.module:Class`")
        parameters = {key: ros_parameter(f"node {name!r} parameter {key!r}", value)
                      for key, value in dict(node.get("parameters") or {}).items()}
        remappings = {str(src): str(dst) for src, dst in dict(node.get("remappings") or {}).items()}
        for topic in (*remappings, *remappings.values()):
            if not topic.startswith("/"):
                raise UserError(f"graph node {name!r}: remapped topic {topic!r} must start with '/'")
        nice, realtime = node.get("nice", 0), node.get("realtime", 0)
        for key, value, low, high in (("nice", nice, -20, 19), ("realtime", realtime, 0, 99)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UserError(f"graph node {name!r}: {key} must be an integer in [{low}, {high}], got {value!r}")
        specs.append(NodeSpec(str(name), str(node["entry"]), parameters, remappings, nice, realtime))
    return specs


def graph_path(config: str | Path) -> Path:
    """A graph config by name (`sim_pushcube` -> configs/hw/sim_pushcube.yaml) or by path."""
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        candidate = path
    else:
        candidate = CONFIG_DIR / f"{config}.yaml"
    if not candidate.is_file():
        choices = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UserError(f"no graph config {str(config)!r}; give a path or one of: {', '.join(choices)}")
    return candidate


def load_graph(config: str | Path) -> list[NodeSpec]:
    """Node specs of a graph config file (plain YAML; anchors allowed, no Hydra needed, so launch files use it)."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_container(OmegaConf.load(graph_path(config)), resolve=True)
    return graph_specs(cfg)


def resolve_entry(entry: str) -> Any:
    """`package.module:attr` -> the object."""
    module_name, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load {entry!r}: {exc}") from exc


def check_entries(specs: list[NodeSpec]) -> None:
    """Import every node class before starting anything, so a missing one fails the whole graph up front."""
    from hw.node import Node
    for spec in specs:
        cls = resolve_entry(spec.entry)
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise UserError(f"node {spec.name!r}: {spec.entry} is not a hw.node.Node subclass")


def node_command(spec: NodeSpec, transport: str = "dds", python: str | None = None) -> list[str]:
    """The command line that runs one node as its own process (the same for `hw up` and the launch file)."""
    return [python or sys.executable, "-m", "hw.run", "--spec", spec.to_json(), "--transport", transport]

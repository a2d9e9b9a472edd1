"""One source of node specs: the ROS 2 launch file builds exactly the specs `hw up` starts.

ROS 2's `launch`/`launch_ros` are not installable here, so the launch file is loaded with minimal stand-ins that
record what it constructs (the real classes take the same keyword arguments); the recorded Nodes must carry the
registry's names, parameters, remappings, and a command line that `hw.run` parses back into the same spec.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from hw.graph import NodeSpec, check_entries, graph_specs, load_graph, node_command, ros_parameter
from hw.run import parse_args
from robot_rl.errors import UserError

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "robot.launch.py"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _stub_modules(monkeypatch) -> None:
    modules = {
        "launch": {"LaunchDescription": type("LaunchDescription", (_Recorder,), {})},
        "launch.actions": {"DeclareLaunchArgument": type("DeclareLaunchArgument", (_Recorder,), {}),
                           "OpaqueFunction": type("OpaqueFunction", (_Recorder,), {})},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Recorder,), {})},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)


def launched_specs(monkeypatch, config: str) -> list[NodeSpec]:
    """Run the launch file the way `ros2 launch ... config:=<config>` does and turn its Nodes back into specs."""
    _stub_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("robot_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    (entities,) = description.args
    declared = {e.args[0]: e.kwargs.get("default_value")
                for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert "config" in declared
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(launch_configurations={**declared, "config": config})
    nodes = [n for o in opaque for n in o.kwargs["function"](context)]
    specs = []
    for node in nodes:
        kw = node.kwargs
        assert kw["executable"] == sys.executable and kw["output"] == "screen"
        assert kw["arguments"][:2] == ["-m", "hw.run"]
        args, _ = parse_args(kw["arguments"][2:])
        assert args.transport == "rclpy"
        from_command = NodeSpec.from_json(args.spec)
        (parameters,) = kw["parameters"]
        # what ROS is handed == what the node process loads (scheduling is the process's: hw.run applies it)
        from_ros = NodeSpec(kw["name"], from_command.entry, parameters, dict(kw["remappings"]),
                            from_command.nice, from_command.realtime)
        assert from_ros == from_command
        specs.append(from_ros)
    return specs


def test_launch_file_builds_the_registry_specs_for_the_shipped_graph(monkeypatch):
    registry = load_graph("sim_pushcube")
    assert [s.name for s in registry] == ["safety", "sim_mirror", "actor", "teleop", "recorder", "learner"]
    assert launched_specs(monkeypatch, "sim_pushcube") == registry
    check_entries(registry)


def test_launch_file_matches_registry_for_a_graph_with_remappings(monkeypatch, tmp_path):
    graph = tmp_path / "robot.yaml"
    graph.write_text("""
joints: &joints [a, b]
nodes:
  safety:
    entry: hw.nodes.safety:SafetyNode
    parameters: {joint_names: *joints, position_lower: [-1, -1], position_upper: [1, 1.5], max_delta: [0.1, 0.1]}
    remappings: {/robot_command: /forward_position_controller/commands}
  other:
    entry: hw.nodes.safety:SafetyNode
    parameters: {joint_names: *joints, position_lower: [-2, -2], position_upper: [2, 2], max_delta: [1, 1],
                 teleop_relative: false, rate_hz: 100}
    remappings: {/joint_states: /arm/joint_states, /robot_command: /arm/commands}
  off: {entry: "x.y:Z", enabled: false}
""")
    registry = load_graph(graph)
    assert [s.name for s in registry] == ["safety", "other"]
    assert registry[0].parameters["position_lower"] == [-1, -1]  # all ints stay ints
    assert registry[0].parameters["position_upper"] == [1.0, 1.5]  # a mixed list becomes floats, as ROS needs
    assert registry[1].remappings == {"/joint_states": "/arm/joint_states", "/robot_command": "/arm/commands"}
    assert launched_specs(monkeypatch, str(graph)) == registry


def test_node_command_round_trips_through_hw_run():
    spec = NodeSpec("n", "hw.nodes.safety:SafetyNode", {"a": [1.0, 2.0], "b": "x"}, {"/x": "/y"}, nice=3, realtime=20)
    cmd = node_command(spec, "dds")
    assert cmd[:3] == [sys.executable, "-m", "hw.run"]
    args, _ = parse_args(cmd[3:] + ["--domain-id", "7", "--ros-args", "-r", "__node:=n"])
    assert NodeSpec.from_json(args.spec) == spec and args.domain_id == 7 and args.transport == "dds"


def test_graph_configs_reject_what_ros_cannot_hold():
    for bad in ([], [1, "a"], {"k": 1}, None):
        with pytest.raises(UserError):
            ros_parameter("p", bad)
    with pytest.raises(UserError, match="nodes"):
        graph_specs({})
    with pytest.raises(UserError, match="entry"):
        graph_specs({"nodes": {"a": {"parameters": {}}}})
    with pytest.raises(UserError, match="must start with '/'"):
        graph_specs({"nodes": {"a": {"entry": "m:C", "remappings": {"joint_states": "/x"}}}})
    for key, value in (("nice", 25), ("realtime", 100), ("realtime", True)):
        with pytest.raises(UserError, match=f"{key} must be an integer"):
            graph_specs({"nodes": {"a": {"entry": "m:C", key: value}}})
    with pytest.raises(UserError, match="no graph config"):
        load_graph("no_such_graph")
    with pytest.raises(UserError, match="cannot load"):
        check_entries([NodeSpec("a", "hw.nodes.nope:Nope")])


def test_shipped_graph_matches_the_sim_mirror_robot():
    """The PushCube joint names and limits in configs/hw/sim_pushcube.yaml are the mirror's own."""
    import sim

    robot = sim.make_env("PushCube").unwrapped.robot
    specs = {spec.name: spec for spec in load_graph("sim_pushcube")}
    for name in ("safety", "sim_mirror", "actor", "teleop", "recorder"):
        params = specs[name].parameters
        assert tuple(params["joint_names"]) == robot.joint_names
        assert [(lo, hi) for lo, hi in zip(params["position_lower"], params["position_upper"])] == \
            [tuple(r) for r in robot.joint_ranges]
    assert specs["safety"].parameters["rate_hz"] == robot.control_hz == specs["teleop"].parameters["rate_hz"]

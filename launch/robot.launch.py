"""ROS 2 launch file for the robot_rl node graph.

    ros2 launch launch/robot.launch.py config:=sim_pushcube      # or config:=/path/to/graph.yaml

Needs ROS 2 (rclpy, launch, launch_ros) and this package installed in the same Python. Every node is built from
the same specs as `robot-rl hw up` (hw.graph.load_graph): one process per node running the command of
hw.graph.node_command with transport rclpy, the spec's parameters handed to ROS as parameters and its remappings
as ROS remappings, so `ros2 param` and `ros2 node info` show them.
"""

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO))


def launch_nodes(context, *args, **kwargs):
    """Resolve `config:=` and build one launch_ros Node per node spec."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from hw.graph import load_graph, node_command

    config = LaunchConfiguration("config").perform(context)
    nodes = []
    for spec in load_graph(config):
        executable, *arguments = node_command(spec, transport="rclpy")
        nodes.append(Node(
            executable=executable,
            arguments=arguments,
            name=spec.name,
            parameters=[spec.parameters],
            remappings=list(spec.remappings.items()),
            output="screen",
        ))
    return nodes


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    return LaunchDescription([
        DeclareLaunchArgument("config", default_value="sim_pushcube",
                              description="graph config: a name under configs/hw/ or a path to a YAML file"),
        OpaqueFunction(function=launch_nodes),
    ])

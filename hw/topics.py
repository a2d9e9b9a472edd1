"""Topic names of the graph (ARCHITECTURE.md, "ROS 2 graph") and the JSON carried on its String topics.

Names are the ROS 2 ones; on a real robot `/joint_states` and `/robot_command` are remapped onto the user's
ros2_control stack (e.g. `/robot_command:=/forward_position_controller/commands`).
"""

from __future__ import annotations

import json
from typing import Any

from hw.msgs import String

JOINT_STATES = "/joint_states"  # JointState: driver or sim mirror -> actor, recorder, safety
TASK_STATE = "/robot_rl/task_state"  # JointState: the rest of obs["state"] (TCP, object poses; named values,
#   stamped like the /joint_states it belongs to): sim mirror or perception -> actor, teleop, recorder
POLICY_COMMAND = "/robot_rl/policy_command"  # Float64MultiArray: actor -> safety (joint position targets)
POLICY_INFO = "/robot_rl/policy_info"  # Float64MultiArray: actor -> recorder
TELEOP_COMMAND = "/teleop/command"  # Float64MultiArray: teleop -> safety (joint position targets, device frame)
TELEOP_INTERVENTION = "/teleop/intervention"  # Bool: teleop -> safety, recorder
ROBOT_COMMAND = "/robot_command"  # Float64MultiArray: safety (only) -> driver or sim mirror
EPISODE = "/robot_rl/episode"  # String JSON {"event": ...}: operator/teleop -> recorder, actor, safety
WEIGHTS = "/robot_rl/weights"  # String JSON {version, path, sha256}: learner -> actor
ESTOP = "/robot_rl/estop"  # Bool: operator -> safety; true latches a hold
SAFETY_STATUS = "/robot_rl/safety_status"  # String JSON {mode, reason, counts}: safety -> anyone

EPISODE_EVENTS = ("start", "success", "failure", "abort", "estop")


def camera_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


def event_message(event: str, **fields: Any) -> String:
    """An episode event as the String message of `/robot_rl/episode`."""
    if event not in EPISODE_EVENTS:
        raise ValueError(f"unknown episode event {event!r}; one of {EPISODE_EVENTS}")
    return String(data=json.dumps({"event": event, **fields}))


def parse_event(msg: String) -> dict[str, Any] | None:
    """The event dict of an `/robot_rl/episode` message, or None when it is not a known event (dropped, counted)."""
    try:
        event = json.loads(msg.data)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EPISODE_EVENTS:
        return None
    return event

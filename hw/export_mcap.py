"""Episodes as ROS 2 messages in an MCAP file: what Foxglove opens, and `ros2 bag info|play FILE.mcap` reads.

The file uses MCAP's `ros2` profile: every schema is the ROS 2 `.msg` text of a standard type (`ros2msg`), every
message its plain-CDR bytes (`cdr`), encoded by `hw.msgs`, the same code that puts these types on DDS (checked
byte for byte against mcap-ros2-support's encoder in tests/hw). Per step of every episode, at its timestamp:

| topic | type | from the store key |
|---|---|---|
| `/robot_rl/obs/<name>` | Float64MultiArray | `obs/<name>` (flat float observations) |
| `/camera/<camera>/image_raw` | Image (rgb8) | `obs/image_<camera>` |
| `/joint_states` | JointState | `obs/state` split by `joint_names` (positions, velocities), when given |
| `/robot_rl/<key>` | Float64MultiArray | each action key: `action`, `policy_action`, `base_action`, |
|   |   | `residual_action`, `human_action` (NaN: no human acted) |
| `/teleop/intervention` | Bool | `intervention` |
| `/robot_rl/reward` | Float64MultiArray | `[reward, terminated, truncated]` |
| `/robot_rl/episode` | String (JSON) | a `start` event with the episode's metadata, then `success` or `failure` |

Timestamps are the store's (seconds); an episode that would start before the previous one ended (sim episodes are
stamped on their own control clock) is shifted to start one step after it, so time only moves forward.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hw.msgs import (
    Bool,
    Header,
    JointState,
    String,
    float64_array,
    msg_definition,
    ros_type_name,
    stamp_of,
)
from hw.observation import image_message
from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError

ACTION_KEYS = ("action", "policy_action", "base_action", "residual_action", "human_action")


class _Channels:
    """Schemas and channels registered on first use."""

    def __init__(self, writer) -> None:
        self.writer = writer
        self.schemas: dict[type, int] = {}
        self.channels: dict[str, int] = {}
        self.messages = 0

    def write(self, topic: str, msg, log_time_ns: int) -> None:
        channel = self.channels.get(topic)
        if channel is None:
            kind = type(msg)
            if kind not in self.schemas:
                self.schemas[kind] = self.writer.register_schema(name=ros_type_name(kind), encoding="ros2msg",
                                                                 data=msg_definition(kind).encode())
            channel = self.channels[topic] = self.writer.register_channel(topic=topic, message_encoding="cdr",
                                                                          schema_id=self.schemas[kind])
        self.writer.add_message(channel_id=channel, log_time=log_time_ns, data=msg.serialize(),
                                publish_time=log_time_ns, sequence=self.messages)
        self.messages += 1


def export_mcap(root: str, out: str, joint_names: Sequence[str] | None = None) -> dict:
    """Write every committed episode of the store at `root` to the MCAP file `out` (atomically: temp + rename)."""
    from mcap.writer import Writer

    store = EpisodeStore.open(root, mode="r")
    if store.num_episodes == 0:
        raise UserError(f"{root} has no committed episodes to export")
    joint_names = list(joint_names or [])
    if joint_names and ("obs/state" not in store.schema or store.schema["obs/state"].shape[0] < 2 * len(joint_names)):
        raise UserError(f"joint_names needs obs/state with at least {2 * len(joint_names)} values (positions, "
                        "velocities); drop joint_names or check the store")
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    next_free = -np.inf
    try:
        with open(tmp, "wb") as f:
            writer = Writer(f)
            writer.start(profile="ros2", library="robot_rl")
            channels = _Channels(writer)
            for index in range(store.num_episodes):
                next_free = _write_episode(channels, store, index, joint_names, next_free)
            writer.finish()
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"out": str(out_path), "episodes": store.num_episodes, "steps": store.num_steps,
            "messages": channels.messages, "topics": sorted(channels.channels)}


def _write_episode(channels: _Channels, store: EpisodeStore, index: int, joint_names: list[str],
                   next_free: float) -> float:
    steps, meta = store.episode(index), store.episode_meta(index)
    times = np.asarray(steps["timestamp"], np.float64)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.05
    if times[0] < next_free:
        times = times + (next_free - times[0])
    ns = lambda t: int(round(t * 1e9))
    n = len(joint_names)
    channels.write("/robot_rl/episode", String(data=json.dumps({"event": "start", "episode": index, **meta})),
                   ns(times[0]))
    for t, when in enumerate(times):
        header = Header(stamp=stamp_of(when), frame_id="base_link")
        for key, spec in store.schema.items():
            if not key.startswith("obs/"):
                continue
            name, value = key.removeprefix("obs/"), steps[key][t]
            if name.startswith("image_") and spec.dtype == np.uint8 and len(spec.shape) == 3:
                channels.write(f"/camera/{name.removeprefix('image_')}/image_raw", image_message(value, header),
                               ns(when))
            elif len(spec.shape) == 1:
                channels.write(f"/robot_rl/obs/{name}", float64_array(value), ns(when))
        if n:
            state = np.asarray(steps["obs/state"][t], np.float64)
            channels.write("/joint_states", JointState(header=header, name=joint_names, position=state[:n].tolist(),
                                                       velocity=state[n:2 * n].tolist()), ns(when))
        for key in ACTION_KEYS:
            if key in steps:
                channels.write(f"/robot_rl/{key}", float64_array(steps[key][t]), ns(when))
        if "intervention" in steps:
            channels.write("/teleop/intervention", Bool(data=bool(steps["intervention"][t])), ns(when))
        flags = [float(steps[k][t]) if k in steps else 0.0 for k in ("reward", "terminated", "truncated")]
        channels.write("/robot_rl/reward", float64_array(flags), ns(when))
    end = "success" if meta["success"] else "failure"
    channels.write("/robot_rl/episode", String(data=json.dumps({"event": end, "episode": index})), ns(times[-1]))
    return float(times[-1] + dt)



def run(cfg) -> dict:
    """`robot-rl data export ROOT --format mcap [out=FILE] [joint_names=[...]]` (routed here by the CLI)."""
    if cfg.get("format", "mcap") != "mcap":
        raise UserError(f"unknown export format {cfg.format!r}; the format is mcap")
    if not cfg.get("root"):
        raise UserError("missing ROOT; use `robot-rl data export ROOT --format mcap [out=FILE]`")
    out = cfg.get("out") or f"{str(cfg.root).rstrip('/')}.mcap"
    names = cfg.get("joint_names")
    return export_mcap(str(cfg.root), str(out), list(names) if names else None)

"""From messages to the observation dict a policy reads, and between normalized actions and joint targets.

A mirror's observation is `{"state": float32 vector, "image_<camera>": uint8 HxWx3}` with `state` laid out as joint
positions, joint velocities, then the task's extra values (TCP, object poses). On the graph those arrive as separate
messages: `/joint_states` (positions and velocities, matched by joint name), `/robot_rl/task_state` (the extra
values, as a JointState of named values) and `/camera/<name>/image_raw`. All messages of one control tick carry the
same header stamp; `ObservationAssembler` joins them by stamp (like message_filters' exact-time synchronizer) and
emits the observation once every part of a tick is in. Malformed parts are dropped and counted, never half-used.

`JointLimits` converts between the normalized [-1, 1] action units of policies and stores and the absolute joint
position targets in robot units that go on the wire (the same affine map as `sim.RobotInterface`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hw.msgs import Header, Image, JointState, seconds_of

IMAGE_ENCODINGS = ("rgb8", "bgr8")
MAX_PENDING = 8  # ticks kept while waiting for their missing parts


@dataclass(frozen=True)
class JointLimits:
    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def of(cls, joint_names: Sequence[str], lower: Sequence[float], upper: Sequence[float]) -> JointLimits:
        lo, hi = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        if not (len(joint_names) == lo.size == hi.size) or np.any(lo >= hi):
            raise ValueError(f"joint limits: {len(joint_names)} joints need as many lower < upper bounds")
        return cls(tuple(joint_names), lo, hi)

    @property
    def n(self) -> int:
        return len(self.joint_names)

    def normalize(self, positions: np.ndarray) -> np.ndarray:
        """Joint targets -> normalized units, clipped to [-1, 1] (a target outside the limits is unreachable)."""
        span = self.upper - self.lower
        return np.clip(2.0 * (np.asarray(positions, np.float64) - self.lower) / span - 1.0, -1.0, 1.0)

    def denormalize(self, action: np.ndarray) -> np.ndarray:
        return self.lower + (np.asarray(action, np.float64) + 1.0) * 0.5 * (self.upper - self.lower)


def stamp_key(header: Header) -> float:
    """The tick a message belongs to (its header stamp in seconds, identical for every part of a tick)."""
    return seconds_of(header.stamp)


def image_array(msg: Image) -> np.ndarray | None:
    """An RGB uint8 HxWx3 array of an rgb8/bgr8 Image, or None when the message does not describe one."""
    h, w = int(msg.height), int(msg.width)
    data = msg.data if isinstance(msg.data, bytes | bytearray) else bytes(msg.data)
    if msg.encoding not in IMAGE_ENCODINGS or h == 0 or w == 0 or msg.step < 3 * w or len(data) != h * msg.step:
        return None
    rows = np.frombuffer(data, np.uint8).reshape(h, msg.step)[:, :3 * w].reshape(h, w, 3)
    return rows[..., ::-1].copy() if msg.encoding == "bgr8" else rows


def image_message(image: np.ndarray, header: Header) -> Image:
    image = np.ascontiguousarray(image, np.uint8)
    h, w, _ = image.shape
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w, data=image.tobytes())


def task_state_names(layout: Sequence[tuple[str, int]], n_joints: int) -> list[str]:
    """Names of the task-state values: the state layout's segments after positions and velocities (`cube_pos/0`)."""
    names, skipped = [], 0
    for segment, size in layout:
        if skipped < 2 and size == n_joints and segment in ("joint_pos", "joint_vel"):
            skipped += 1
            continue
        names += [f"{segment}/{i}" for i in range(size)]
    return names


@dataclass
class Observation:
    stamp: float
    q: np.ndarray  # joint positions, joint_names order, robot units
    dq: np.ndarray
    obs: dict[str, np.ndarray]  # what the policy reads: "state" and "image_<camera>"


@dataclass
class _Partial:
    q: np.ndarray | None = None
    dq: np.ndarray | None = None
    extra: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)


class ObservationAssembler:
    """Joins `/joint_states`, the task state and camera images of one tick into an `Observation`.

    `task_state=False` builds `state` from the joints alone; `cameras` lists the images a tick needs. `state_dim`,
    when known (from a policy spec), rejects a task state of the wrong length before it reaches the policy.
    """

    def __init__(self, joint_names: Sequence[str], task_state: bool = True, cameras: Sequence[str] = (),
                 state_dim: int | None = None):
        self.joint_names = tuple(joint_names)
        self.task_state = task_state
        self.cameras = tuple(cameras)
        self.state_dim = state_dim
        self.counts: Counter[str] = Counter()
        self.latest: Observation | None = None
        self._pending: dict[float, _Partial] = {}
        self._done_until = -np.inf  # ticks at or before this stamp were emitted (late parts of them are dropped)

    def on_joint_state(self, msg: JointState) -> Observation | None:
        q = _by_name(msg.name, msg.position, self.joint_names)
        no_velocity = np.zeros(len(self.joint_names))  # drivers may leave velocity empty (ROS allows it)
        dq = _by_name(msg.name, msg.velocity, self.joint_names) if len(msg.velocity) else no_velocity
        if q is None or dq is None:
            self.counts["malformed_joint_states"] += 1
            return None
        return self._add(stamp_key(msg.header), "q", (q, dq))

    def on_task_state(self, msg: JointState) -> Observation | None:
        values = np.asarray(msg.position, np.float64)
        expected = None if self.state_dim is None else self.state_dim - 2 * len(self.joint_names)
        if not self.task_state or values.ndim != 1 or not np.all(np.isfinite(values)) or (
                expected is not None and values.size != expected):
            self.counts["malformed_task_state"] += 1
            return None
        return self._add(stamp_key(msg.header), "extra", values)

    def on_image(self, camera: str, msg: Image) -> Observation | None:
        image = image_array(msg)
        if image is None or camera not in self.cameras:
            self.counts["malformed_images"] += 1
            return None
        return self._add(stamp_key(msg.header), camera, image)

    def _add(self, stamp: float, part: str, value) -> Observation | None:
        if stamp <= self._done_until:
            self.counts["late_parts"] += 1
            return None
        partial = self._pending.setdefault(stamp, _Partial())
        if part == "q":
            partial.q, partial.dq = value
        elif part == "extra":
            partial.extra = value
        else:
            partial.images[part] = value
        if partial.q is None or (self.task_state and partial.extra is None) or len(partial.images) < len(self.cameras):
            if len(self._pending) > MAX_PENDING:
                oldest = min(self._pending)
                del self._pending[oldest]
                self.counts["incomplete_ticks"] += 1
            return None
        for older in [s for s in self._pending if s <= stamp]:
            if older < stamp:
                self.counts["incomplete_ticks"] += 1
            del self._pending[older]
        self._done_until = stamp
        parts = [partial.q, partial.dq] + ([partial.extra] if self.task_state else [])
        obs = {"state": np.concatenate(parts).astype(np.float32)}
        if self.state_dim is not None and obs["state"].size != self.state_dim:
            self.counts["wrong_state_size"] += 1
            return None
        obs.update({f"image_{camera}": partial.images[camera] for camera in self.cameras})
        self.latest = Observation(stamp, partial.q, partial.dq, obs)
        self.counts["observations"] += 1
        return self.latest


def _by_name(names: Sequence[str], values: Sequence[float], wanted: tuple[str, ...]) -> np.ndarray | None:
    """`values` reordered to `wanted` by name; None if a name is missing, lengths disagree or a value is not finite."""
    values = np.asarray(values, np.float64)
    if len(names) != values.size:
        return None
    index = {name: i for i, name in enumerate(names)}
    if any(name not in index for name in wanted):
        return None
    out = values[[index[name] for name in wanted]]
    return out if np.all(np.isfinite(out)) else None

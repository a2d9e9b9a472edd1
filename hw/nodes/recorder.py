"""The `recorder` node: every control step of the robot into the episode store, one episode per start/end event.

A step is one observation tick (joint states, task state and cameras joined by stamp). It is written when the next
tick arrives (or the episode ends), with what happened in between:

- `action`: the last `/robot_command` the safety node sent (what the robot executed), normalized to [-1, 1];
- `policy_action`, `base_action`, `residual_action`: the actor's `PolicyInfo` for this tick's stamp;
- `intervention`: a takeover was on during the step; `human_action`: the executed command on intervened steps
  (the person's command after the safety node's anchoring and limits), all-NaN otherwise;
- `reward` 1 and `terminated` on the last step of a successful episode, `truncated` on a failed one.

Events on `/robot_rl/episode`: `start` (stamped with the first tick of the episode) opens an episode, `success` or
`failure` commits it (`robot_rl.data`: nothing is visible before the commit), `abort`, `estop` or a second `start`
discard it. The store is created at the first observation (its schema follows the observation) or appended to.
A killed recorder loses at most the episode in progress: that is the store's guarantee.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from hw.msgs import Bool, Float64MultiArray, Image, JointState, String, array_of
from hw.node import Node
from hw.nodes.status import StatusReporter
from hw.observation import JointLimits, Observation, ObservationAssembler
from hw.policy_info import PolicyInfo
from hw.topics import (
    EPISODE,
    JOINT_STATES,
    POLICY_INFO,
    ROBOT_COMMAND,
    TASK_STATE,
    TELEOP_INTERVENTION,
    camera_topic,
    parse_event,
)
from hw.transport import RELIABLE, NodeHandle, QoS
from robot_rl.data import SOURCES, EpisodeStore, make_step_schema
from robot_rl.errors import UserError

OBSERVATIONS = QoS(reliable=False, depth=20)  # best effort matches any driver; deep enough to miss nothing locally


@dataclass(frozen=True)
class RecorderParams:
    joint_names: tuple[str, ...]
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    store: str  # episode store root (created at the first observation when it does not exist)
    task: str = ""
    domain: str = "sim"  # "real" on a robot, or the name of a sim variant
    source: str = "policy"
    policy_id: str = ""
    cameras: tuple[str, ...] = ()
    task_state: bool = True
    compression: str = ""  # "" (raw) or "zstd"
    status_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {SOURCES}")


class RecorderNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.p = p = self.declare(RecorderParams)
        self.limits = JointLimits.of(p.joint_names, p.position_lower, p.position_upper)
        self.assembler = ObservationAssembler(p.joint_names, p.task_state, p.cameras)
        self.counts: Counter[str] = Counter()
        self.store: EpisodeStore | None = None
        self.writer = None
        self.recording = False
        self.start_stamp = -np.inf
        self.pending: Observation | None = None
        self.pending_intervened = False
        self.intervention = False
        self.executed: np.ndarray | None = None
        self.infos: dict[float, PolicyInfo] = {}
        self.last_info: PolicyInfo | None = None
        self.episodes = 0

        self.status = StatusReporter(self, self._status, p.status_period_s)
        self.subscribe(ROBOT_COMMAND, Float64MultiArray, self._on_command, QoS(reliable=True, depth=20))
        self.subscribe(POLICY_INFO, Float64MultiArray, self._on_policy_info, QoS(reliable=True, depth=20))
        self.subscribe(TELEOP_INTERVENTION, Bool, self._on_intervention, RELIABLE)
        self.subscribe(EPISODE, String, self._on_episode, RELIABLE)
        for camera in p.cameras:
            self.subscribe(camera_topic(camera), Image, lambda m, c=camera: self._on_obs(self.assembler.on_image(c, m)),
                           OBSERVATIONS)
        if p.task_state:
            self.subscribe(TASK_STATE, JointState, lambda m: self._on_obs(self.assembler.on_task_state(m)),
                           OBSERVATIONS)
        self.subscribe(JOINT_STATES, JointState, lambda m: self._on_obs(self.assembler.on_joint_state(m)),
                       OBSERVATIONS)

    # -- store -------------------------------------------------------------------------------------------------------
    def _open_store(self, ob: Observation) -> bool:
        if self.store is not None:
            return True
        obs_spec = {key: (value.shape, "uint8" if value.dtype == np.uint8 else "float32")
                    for key, value in ob.obs.items()}
        try:
            self.store = EpisodeStore.create(self.p.store, make_step_schema(obs_spec, self.limits.n), exist_ok=True,
                                             compression=self.p.compression or None)
        except UserError as exc:
            self.log.error("cannot record: %s", exc)
            self.counts["store_errors"] += 1
            self.recording = False
            return False
        self.writer = self.store.writer()
        return True

    # -- steps -------------------------------------------------------------------------------------------------------
    def _on_obs(self, ob: Observation | None) -> None:
        if ob is None or not self.recording or ob.stamp < self.start_stamp:
            return
        if self.pending is not None:
            self._write_pending()
        self._begin_step(ob)

    def _begin_step(self, ob: Observation) -> None:
        if self._open_store(ob):
            self.pending, self.pending_intervened = ob, self.intervention

    def _write_pending(self, reward: float = 0.0, terminated: bool = False, truncated: bool = False) -> None:
        ob, self.pending = self.pending, None
        executed = self.executed if self.executed is not None else self.limits.normalize(ob.q)
        info = self.infos.get(ob.stamp)
        if info is None:
            self.counts["steps_without_policy_info"] += 1
            info = self.last_info
        if info is not None:
            proposal, base, residual = info.proposal, info.base, info.residual
        else:
            proposal, base, residual = executed, executed, np.zeros_like(executed)
        human = executed if self.pending_intervened else np.full(self.limits.n, np.nan)
        step = {f"obs/{key}": value for key, value in ob.obs.items()}
        step.update({
            "action": executed, "policy_action": proposal, "base_action": base, "residual_action": residual,
            "human_action": human, "intervention": self.pending_intervened, "reward": np.float32(reward),
            "terminated": terminated, "truncated": truncated, "timestamp": ob.stamp,
        })
        step = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v
                for k, v in step.items()}
        try:
            self.writer.add_step(step)
            self.counts["steps"] += 1
        except UserError as exc:
            self.log.warning("step not recorded: %s", exc)
            self.counts["rejected_steps"] += 1

    def _on_command(self, msg: Float64MultiArray) -> None:
        q = array_of(msg).ravel()
        if q.shape != (self.limits.n,) or not np.all(np.isfinite(q)):
            self.counts["malformed_commands"] += 1
            return
        self.executed = self.limits.normalize(q)
        if self.intervention:
            self.pending_intervened = True

    def _on_policy_info(self, msg: Float64MultiArray) -> None:
        info = PolicyInfo.from_msg(msg, self.limits.n)
        if info is None:
            self.counts["malformed_policy_info"] += 1
            return
        self.infos[info.obs_stamp] = self.last_info = info
        for old in sorted(self.infos)[:-16]:
            del self.infos[old]

    def _on_intervention(self, msg: Bool) -> None:
        self.intervention = bool(msg.data)
        if self.intervention:
            self.pending_intervened = True

    # -- episodes ----------------------------------------------------------------------------------------------------
    def _on_episode(self, msg: String) -> None:
        event = parse_event(msg)
        if event is None:
            self.counts["malformed_events"] += 1
            return
        name = event["event"]
        if name == "start":
            if self.recording:
                self._discard("restarted")
            self.recording, self.intervention = True, False
            stamp = event.get("stamp")
            self.start_stamp = float(stamp) if isinstance(stamp, int | float) else -np.inf
            latest = self.assembler.latest  # the episode's first tick may have arrived before its start event
            if latest is not None and latest.stamp >= self.start_stamp and np.isfinite(self.start_stamp):
                self._begin_step(latest)
        elif name in ("success", "failure") and self.recording:
            self._commit(name == "success")
        elif name in ("abort", "estop") and self.recording:
            self._discard(name)

    def _commit(self, success: bool) -> None:
        self.recording = False
        if self.pending is not None:
            self._write_pending(reward=float(success), terminated=success, truncated=not success)
        if self.writer is None or self.writer.pending_steps == 0:
            return
        version = self.last_info.weights_version if self.last_info is not None else 0
        policy_id = (self.p.policy_id or "actor") + (f"+residual_v{version}" if version else "")
        try:
            self.writer.end_episode(success=success, source=self.p.source, task=self.p.task, domain=self.p.domain,
                                    policy_id=policy_id)
        except UserError as exc:
            self.log.error("episode not committed: %s", exc)
            self.counts["commit_errors"] += 1
            return
        self.episodes += 1
        self.counts["successes" if success else "failures"] += 1
        self.status.publish()

    def _discard(self, reason: str) -> None:
        self.recording, self.pending = False, None
        if self.writer is not None:
            self.writer.discard()
        self.counts[f"discarded_{reason}"] += 1

    def _status(self) -> dict:
        return {"episodes": self.episodes, "recording": self.recording, "store": self.p.store,
                "counts": {**self.assembler.counts, **self.counts}}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()  # an unfinished episode is discarded, never half-committed
        self.status.publish()

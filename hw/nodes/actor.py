"""The `actor` node: base policy through the chunk scheduler, plus the learner's residual, one command per tick.

For every complete observation (joint states, task state and the policy's cameras of one tick, joined by stamp in
`hw.observation.ObservationAssembler`) it computes

    base = scheduler.step(obs)                      # the base policy's chunked actions (async: never waits)
    proposal = clip(base + residual(state, base))   # robot_rl.rl.residual.compose_action, normalized units
    target = denormalize(proposal)                  # absolute joint targets inside the joint limits

and publishes `target` on `/robot_rl/policy_command` (the safety node decides what reaches the robot) and a
`hw.policy_info.PolicyInfo` on `/robot_rl/policy_info`. The base policy is a checkpoint (`robot_rl.policies`) or,
in simulation without one, the mirror's scripted expert wrapped as a one-step chunk policy. A checkpoint's chunks
are inferred in a child process by default (`inference: process`), so the control step never waits on the GIL.

Residual weights announced on `/robot_rl/weights` are verified and compiled on a background thread
(`hw.weights.WeightsLoader`: sha256 against the announcement and the sidecar, network shape, the optional `gate`)
and swapped in between two ticks. A bad file, a refused gate or a dead learner leave the running weights in place.
An episode `start` event resets the scheduler (history and chunks of the new episode).
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from hw.graph import resolve_entry
from hw.msgs import Float64MultiArray, Image, JointState, String, float64_array
from hw.node import Node
from hw.nodes.status import StatusReporter
from hw.observation import JointLimits, Observation, ObservationAssembler
from hw.policy_info import PolicyInfo
from hw.topics import EPISODE, JOINT_STATES, POLICY_COMMAND, POLICY_INFO, TASK_STATE, WEIGHTS, camera_topic, parse_event
from hw.transport import LATCHED, LATEST, RELIABLE, SENSOR_DATA, NodeHandle
from hw.weights import Announcement, ResidualPolicy, WeightsError, WeightsLoader, run_jax_inline
from robot_rl.errors import UserError
from robot_rl.rl.residual import compose_action


@dataclass(frozen=True)
class ActorParams:
    joint_names: tuple[str, ...]
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    policy: str = "expert"  # a base policy checkpoint, or "expert": the task's scripted expert (simulation)
    task: str = ""  # the mirror's task: the expert's, and checked against a checkpoint's
    scheduler: str = "async"  # chunk scheduler mode: open_loop | ensemble | async
    n_action_steps: int = 0  # 0: the policy's own
    ddim_steps: int = 0  # 0: the checkpoint's
    expert_noise: float = 0.0
    expert_fail_prob: float = 0.0
    task_state: bool = True  # the state vector continues past the joints with /robot_rl/task_state
    residual: str = ""  # a weights file to start from; empty: the base alone until the learner announces one
    stochastic: bool = False  # sample the residual (exploration while a learner trains on the robot's data)
    gate: str = ""  # "module:function(announcement, weights) -> bool", asked before every swap
    seed: int = 0
    # A checkpoint's async inference runs in a child process ("process": the control step never waits for the GIL
    # held by a denoising loop) or on a thread of this process ("thread"); the scripted expert always runs inline.
    inference: str = "process"
    inference_nice: int = 5  # niceness of the inference process above the actor's: the control step gets the core
    gil_switch_interval_s: float = 0.0005  # thread inference shares the GIL: bound how long a tick can wait for it
    status_period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.inference not in ("process", "thread"):
            raise UserError(f"actor: inference {self.inference!r} is unknown; choose process or thread")
        JointLimits.of(self.joint_names, self.position_lower, self.position_upper)  # raises on inconsistent limits


class ExpertChunkPolicy:
    """The mirror's scripted expert as a chunk policy of horizon 1 (the scheduler's policy interface), so a sim graph
    runs the actor's real path without a trained checkpoint."""

    def __init__(self, task: str, noise: float, fail_prob: float, seed: int):
        import sim
        from robot_rl.policies import PolicySpec

        try:
            self.expert = sim.make_expert(task, noise=noise, fail_prob=fail_prob, seed=seed)
        except sim.SimError as exc:
            raise UserError(f"actor: {exc}") from exc
        state_dim = max(s.stop for s in self.expert.slices.values())
        self.spec = PolicySpec(obs_keys=("state",), action_dim=len(self.expert.low), horizon=1, n_obs_steps=1,
                               rate_hz=0.0, task=task, obs_shapes={"state": (state_dim,)}, n_action_steps=1,
                               kind="bc")
        self._state: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset()
        self._state = None

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        self.spec.check_obs(obs)
        self._state = np.array(obs["state"], copy=True)

    def obs_history(self) -> dict[str, np.ndarray]:
        return {"state": self._state[None]}

    def predict(self, obs_history: dict[str, np.ndarray]) -> np.ndarray:
        return self.expert.act({"state": obs_history["state"][-1]})[None]


class ActorNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        from robot_rl.policies import ChunkScheduler

        self.p = self.declare(ActorParams)
        run_jax_inline()  # the residual runs on the control thread, once per tick
        self.limits = JointLimits.of(self.p.joint_names, self.p.position_lower, self.p.position_upper)
        self.policy = self._base_policy()
        spec = self.policy.spec
        if spec.action_dim != self.limits.n:
            raise UserError(f"node {self.name!r}: the policy has action_dim {spec.action_dim}, the robot "
                            f"{self.limits.n} joints ({', '.join(self.p.joint_names)})")
        if "state" not in spec.obs_keys:
            raise UserError(f"node {self.name!r}: the policy reads {list(spec.obs_keys)}; the actor needs 'state'")
        self.state_dim = spec.obs_shapes["state"][0]
        cameras = [key.removeprefix("image_") for key in spec.image_keys()]
        inference = self.p.inference if getattr(self.policy, "checkpoint", None) else "thread"
        self.scheduler = ChunkScheduler(self.policy, mode=self.p.scheduler,
                                        n_action_steps=self.p.n_action_steps or None, inference=inference,
                                        inference_nice=self.p.inference_nice)
        if self.p.scheduler == "async" and inference == "thread":
            sys.setswitchinterval(self.p.gil_switch_interval_s)
        self.counts: Counter[str] = Counter()
        gate = resolve_entry(self.p.gate) if self.p.gate else None
        self.loader = WeightsLoader(self.state_dim, self.limits.n, self.p.stochastic, self.p.seed, gate)
        self.residual: ResidualPolicy | None = self._initial_residual()
        self.steps = 0
        self.compute_s: deque[float] = deque(maxlen=1000)  # observation in -> command out, this process only

        self.assembler = ObservationAssembler(self.p.joint_names, self.p.task_state, cameras, self.state_dim)
        self.command_pub = self.publisher(POLICY_COMMAND, Float64MultiArray, LATEST)
        self.info_pub = self.publisher(POLICY_INFO, Float64MultiArray, RELIABLE)
        self.status = StatusReporter(self, self._status, self.p.status_period_s)
        self.subscribe(EPISODE, String, self._on_episode, RELIABLE)
        self.subscribe(WEIGHTS, String, self._on_weights, LATCHED)
        for camera in cameras:
            self.subscribe(camera_topic(camera), Image, lambda m, c=camera: self._act(self.assembler.on_image(c, m)),
                           SENSOR_DATA)
        if self.p.task_state:
            self.subscribe(TASK_STATE, JointState, lambda m: self._act(self.assembler.on_task_state(m)), SENSOR_DATA)
        self.subscribe(JOINT_STATES, JointState, lambda m: self._act(self.assembler.on_joint_state(m)), SENSOR_DATA)

    def _base_policy(self):
        if self.p.policy == "expert":
            if not self.p.task:
                raise UserError(f"node {self.name!r}: policy 'expert' needs the task parameter (e.g. task: PushCube)")
            return ExpertChunkPolicy(self.p.task, self.p.expert_noise, self.p.expert_fail_prob, self.p.seed)
        from robot_rl.policies import load_policy

        policy = load_policy(self.p.policy, task=self.p.task or None, action_dim=len(self.p.joint_names),
                             seed=self.p.seed, ddim_steps=self.p.ddim_steps or None)
        policy.warm_up()  # for thread and inline inference; an inference process warms its own copy
        return policy

    def _initial_residual(self) -> ResidualPolicy | None:
        if not self.p.residual:
            return None
        try:
            return self.loader.load_file(self.p.residual)
        except WeightsError as exc:
            raise UserError(f"node {self.name!r}: residual {self.p.residual}: {exc}") from exc

    # -- the control step ----------------------------------------------------------------------------------------------
    def _act(self, ob: Observation | None) -> None:
        if ob is None:
            return
        began = time.perf_counter()
        ready = self.loader.poll()
        if ready is not None:
            self.residual = ready
            self.status.publish()
        base, info = self.scheduler.step(ob.obs)
        base = np.asarray(base, np.float64)
        residual = self.residual(ob.obs["state"], base) if self.residual is not None else np.zeros_like(base)
        proposal = compose_action(base, residual)
        self.command_pub.publish(float64_array(self.limits.denormalize(proposal)))
        version = self.residual.version if self.residual is not None else 0
        self.info_pub.publish(PolicyInfo(ob.stamp, int(info["chunk_id"]), int(info["chunk_index"]), version, base,
                                         residual, proposal).to_msg())
        self.steps += 1
        self.compute_s.append(time.perf_counter() - began)

    def _on_episode(self, msg: String) -> None:
        event = parse_event(msg)
        if event is None:
            self.counts["malformed_events"] += 1
        elif event["event"] == "start":
            self.scheduler.reset()
            if self.residual is not None:
                self.residual.new_episode()
            self.counts["episodes"] += 1

    def _on_weights(self, msg: String) -> None:
        announcement = Announcement.parse(msg)
        if announcement is None:
            self.counts["malformed_weights"] += 1
            return
        self.counts["weights_announced"] += 1
        self.loader.submit(announcement)

    def _status(self) -> dict:
        counts = {**self.assembler.counts, **self.loader.counts, **self.counts}
        ms = np.asarray(self.compute_s) * 1e3
        return {"weights_version": self.residual.version if self.residual is not None else 0,
                "weights_sha256": self.residual.weights.sha256 if self.residual is not None else "",
                "steps": self.steps, "compute_ms_p50": float(np.percentile(ms, 50)) if ms.size else None,
                "compute_ms_p99": float(np.percentile(ms, 99)) if ms.size else None, "counts": counts}

    def close(self) -> None:
        self.log.info("status at shutdown: %s", self._status())
        self.status.publish()
        self.scheduler.close()
        self.loader.close()

"""The `learner` node: residual SAC on what the robot does, while it does it (HIL-SERL's actor/learner split).

It tails the episode store the recorder writes (`ReplayCache.sync`: committed episodes only, in memory), samples
n-step batches half from demonstrations and intervened steps, half from the policy's own steps (`NStepSampler`
groups; the recipe's `demo_fraction`), and updates `robot_rl.rl.agent.ResidualAgent` (one jitted call: the UTD
critic updates and the actor update). Every `publish_every` updates it writes a new weights version
(`hw.weights.write_weights`: atomic files with sha256) and announces it on `/robot_rl/weights` (latched, so an
actor that starts later gets the newest). Every `checkpoint_every` updates, and at shutdown, it checkpoints its whole
training state (`robot_rl.rl.checkpoint`), so a learner that died resumes where it stopped and numbers its versions
on from the newest file.

With `gate_base` set (the base policy checkpoint the actor runs), every version must pass the evaluator's deployment
gate first (RL-100 style, `robot_rl.eval.gate`): one chunked-TD evaluator, fitted on the cached steps for the
candidate (base + the new residual) and for the deployed policy (base + the last version that passed; the base
alone before any), and the version is written and announced only if the candidate's pessimistic value beats the
deployed one's by `gate_margin`. A refused candidate is counted and logged; training goes on from it.

Transitions come from the store's keys: obs = `obs_key`, action = the executed action (the person's on intervened
steps), base action and next base action as the actor recorded them, rewards from the episode events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from hw.msgs import String  # noqa: E402
from hw.node import Node  # noqa: E402
from hw.nodes.status import StatusReporter  # noqa: E402
from hw.topics import WEIGHTS  # noqa: E402
from hw.transport import LATCHED, NodeHandle  # noqa: E402
from hw.weights import Announcement, latest_version, weights_path, write_weights  # noqa: E402
from robot_rl.data import EpisodeStore, ReplayCache  # noqa: E402
from robot_rl.errors import UserError  # noqa: E402
from robot_rl.rl.agent import ResidualAgent, observation_stats  # noqa: E402
from robot_rl.rl.checkpoint import (  # noqa: E402
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    sha256_hex,
)
from robot_rl.rl.config import load_recipe  # noqa: E402
from robot_rl.rl.replay import agent_batch, n_step_sampler, shape_rewards  # noqa: E402


@dataclass(frozen=True)
class LearnerParams:
    store: str  # the recorder's episode store
    weights_dir: str  # where versions (and the learner's checkpoints, under learner/) go
    recipe: str = "ours"  # configs/residual/<recipe>.yaml
    overrides: tuple[str, ...] = ()  # recipe overrides "key=value" (e.g. "batch_size=64", "actor.hidden_dim=64")
    obs_key: str = "obs/state"
    min_steps: int = 1000  # stored steps before the first update
    updates_per_tick: int = 1
    tick_s: float = 0.05
    sync_every_s: float = 2.0
    publish_every: int = 50  # updates between weight versions
    capacity: int = 200_000  # replay cache steps
    keep: int = 3  # weight versions kept on disk
    checkpoint_every: int = 500  # updates between training-state checkpoints (0: only at shutdown)
    seed: int = 0
    status_period_s: float = 1.0
    gate_base: str = ""  # base policy checkpoint the actor runs: gate every version against the deployed one
    gate_margin: float = 0.01  # pessimistic value the candidate must gain over the deployed policy
    gate_updates: int = 500  # evaluator updates per policy and decision
    gate_time_limit: int = 0  # steps an episode may run before it is cut (the gate counts returns within it); 0: none


def parse_overrides(items: tuple[str, ...]) -> dict:
    """`("batch_size=64", "actor.hidden_dim=32")` -> `{"batch_size": 64, "actor.hidden_dim": 32}` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"learner override {item!r} must look like key=value, e.g. batch_size=64")
        out[key.strip()] = yaml.safe_load(value)
    return out


class LearnerNode(Node):
    def __init__(self, handle: NodeHandle):
        super().__init__(handle)
        self.p = p = self.declare(LearnerParams)
        self.cfg = load_recipe(p.recipe, **parse_overrides(p.overrides))
        self.weights_dir = Path(p.weights_dir)
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.weights_dir / "learner"
        self.store: EpisodeStore | None = None
        self.agent: ResidualAgent | None = None
        self.state = None
        self.updates = 0
        self.version = latest_version(self.weights_dir)
        self.last_sync = -np.inf
        self.metrics: dict[str, float] = {}
        self.gate = LiveGate(p.gate_base, p.gate_margin, p.gate_updates, p.obs_key, p.seed,
                             p.gate_time_limit) if p.gate_base else None
        self.gate_counts = {"accepted": 0, "rejected": 0}
        self.gate_reason = ""
        self.weights_pub = self.publisher(WEIGHTS, String, LATCHED)
        self.status = StatusReporter(self, self._status, p.status_period_s)
        self.timer(p.tick_s, self._tick)

    def _start(self) -> bool:
        """Open the store (once the recorder made it) and build the agent, resuming a checkpoint if there is one."""
        try:
            self.store = EpisodeStore.open(self.p.store, mode="r")
        except UserError:
            return False  # not created yet: the recorder makes it at its first observation
        schema = self.store.schema
        if self.p.obs_key not in schema or len(schema[self.p.obs_key].shape) != 1:
            raise UserError(f"node {self.name!r}: the store has no flat {self.p.obs_key!r}; set obs_key")
        keys = [self.p.obs_key, "action", "base_action", "reward", "terminated", "intervention"]
        self.cache = ReplayCache.for_store(self.store, self.p.capacity, keys)
        shape_rewards(self.cache, self.cfg)
        self.sampler = n_step_sampler(self.cache, self.cfg, self.p.obs_key, self.p.seed)
        if self.version:  # a restarted learner re-announces its newest version (latched for late actors)
            path = weights_path(self.weights_dir, self.version)
            self.weights_pub.publish(Announcement(self.version, str(path.resolve()),
                                                  sha256_hex(path.read_bytes())).to_msg())
        return True

    def _tick(self) -> None:
        if self.store is None and not self._start():
            return
        if self.now() - self.last_sync >= self.p.sync_every_s:
            self.last_sync = self.now()
            self.cache.sync(self.store)
        if self.cache.size < max(self.p.min_steps, 1):
            return
        if self.agent is None:
            self._build_agent()
        rows = self.cfg.utd * self.cfg.batch_size
        for _ in range(self.p.updates_per_tick):
            batch = agent_batch(self.sampler.sample(rows), self.p.obs_key)
            self.state, metrics = self.agent.update(self.state, batch, 1.0,
                                                    update_actor=self.updates % self.cfg.actor_every == 0)
            self.updates += 1
            if self.updates % self.p.publish_every == 0:
                self.metrics = {k: float(v) for k, v in metrics.items()}
                self._publish()
            if self.p.checkpoint_every and self.updates % self.p.checkpoint_every == 0:
                self._checkpoint()

    def _build_agent(self) -> None:
        """The agent, once `min_steps` are cached: the state is standardized with the statistics of the steps then
        in the cache (kept in the recipe, so every weight file carries them to the actor), or with those of the
        checkpoint a restarted learner resumes."""
        schema = self.store.schema
        obs_dim, action_dim = schema[self.p.obs_key].shape[0], schema["action"].shape[0]
        resume = latest_checkpoint(self.ckpt_dir)
        if self.cfg.obs_stats is None:
            stats = read_checkpoint(resume)[1]["meta"]["agent"]["obs_stats"] if resume else None
            self.cfg = replace(self.cfg, obs_stats=stats or observation_stats(
                self.cache.data[self.p.obs_key][self.cache.valid]))
        self.agent = ResidualAgent(self.cfg, obs_dim, action_dim)
        self.state = self.agent.init(self.p.seed)
        if resume is not None:
            self.state, sidecar = load_checkpoint(self.ckpt_dir, self.state)
            self.updates = int(sidecar["meta"]["updates"])
            self.log.info("resumed at %d updates", self.updates)

    def _publish(self) -> None:
        if self.gate is not None:
            decision = self.gate.decide(self.cache, self.agent, self.state)
            self.gate_counts["accepted" if decision.accept else "rejected"] += 1
            self.gate_reason = decision.reason
            self.log.info("gate after %d updates: %s", self.updates, decision.reason)
            if not decision.accept:
                self.status.publish()
                return
        self.version += 1
        announcement = write_weights(self.weights_dir, self.version, self.cfg, self.agent.obs_dim,
                                     self.agent.action_dim, self.state.actor,
                                     meta={"updates": self.updates, "store_steps": self.store.num_steps,
                                           "obs_key": self.p.obs_key}, keep=self.p.keep)
        self.weights_pub.publish(announcement.to_msg())
        self.log.info("published weights v%d after %d updates", self.version, self.updates)
        self.status.publish()

    def _checkpoint(self) -> None:
        meta = {"updates": self.updates, "version": self.version, "agent": self.cfg.to_dict(),
                "obs_dim": self.agent.obs_dim, "action_dim": self.agent.action_dim}
        save_checkpoint(self.ckpt_dir, self.state, meta, step=self.updates)

    def _status(self) -> dict:
        return {"version": self.version, "updates": self.updates,
                "cache_steps": self.cache.size if self.store is not None else 0,
                "store_episodes": self.store.num_episodes if self.store is not None else 0, "metrics": self.metrics,
                **({"gate": {**self.gate_counts, "last": self.gate_reason}} if self.gate is not None else {})}

    def close(self) -> None:
        if self.agent is not None and self.updates:
            self._checkpoint()
        self.status.publish()


class LiveGate:
    """The deployment gate over the learner's cache: the candidate residual (the agent's current actor) against the
    deployed one (the last candidate that passed; none at first, i.e. the base alone), both on top of the base the
    actor runs. Fitting the evaluator blocks the learner for a few seconds per decision, never the actor."""

    def __init__(self, base: str, margin: float, updates: int, obs_key: str, seed: int, time_limit: int = 0):
        from robot_rl.eval.gate import DeploymentGate
        from robot_rl.policies import load_policy

        if not Path(base).is_file():
            raise UserError(f"learner gate_base {base} does not exist; give the policy.safetensors the actor runs "
                            "(or leave gate_base empty to publish without the gate)")
        self.policy = load_policy(base, seed=seed)
        self.gate = DeploymentGate(margin)
        self.updates, self.obs_key, self.seed = updates, obs_key, seed
        self.time_limit = time_limit or None
        self.deployed = None  # (agent, train state) of the last accepted candidate

    def decide(self, cache: ReplayCache, agent: ResidualAgent, state):
        from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
        from robot_rl.workflows.candidates import Candidate, Residual

        cfg = EvaluatorConfig(updates=self.updates, updates_per_call=min(500, self.updates), obs_key=self.obs_key,
                              time_limit=self.time_limit, seed=self.seed)
        evaluator = ChunkedTDEvaluator(cfg, cache)
        candidate = Candidate("candidate", self.policy, Residual(agent, state, Path("candidate")))
        deployed = Candidate("deployed", self.policy,
                             Residual(*self.deployed, Path("deployed")) if self.deployed else None)
        decision = self.gate.decide(evaluator.fit(candidate), evaluator.fit(deployed))
        if decision.accept:
            self.deployed = (agent, state)
        return decision

"""Shared pieces of the node tests: the PushCube graph's node specs, an in-process rig, tiny residual weights."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hw import topics
from hw.graph import NodeSpec, load_graph
from hw.msgs import Float64MultiArray, JointState, String, array_of
from hw.nodes.status import parse_status, status_topic
from hw.policy_info import PolicyInfo
from hw.run import build_node
from hw.transport import LATCHED, InProcessTransport

GRAPH = {spec.name: spec for spec in load_graph("sim_pushcube")}
LIMITS = {k: GRAPH["safety"].parameters[k] for k in ("joint_names", "position_lower", "position_upper")}
NAMES = LIMITS["joint_names"]
N = len(NAMES)
LOWER, UPPER = np.array(LIMITS["position_lower"]), np.array(LIMITS["position_upper"])
STATE_DIM = 21  # PushCube's obs["state"]
PERIOD = 1.0 / GRAPH["safety"].parameters["rate_hz"]
# One tiny residual recipe for every test that trains or loads weights: XLA compiles it once per session.
TINY_OVERRIDES = ["batch_size=16", "utd=1", "actor.hidden_dim=16", "critic.hidden_dim=16", "actor.expansion=1",
                  "critic.expansion=1", "critic.num_bins=21"]


def spec(name: str, **params) -> NodeSpec:
    """The shipped graph's node `name` with parameters overridden (None removes one)."""
    base = GRAPH[name]
    merged = {k: v for k, v in {**base.parameters, **params}.items() if v is not None}
    return replace(base, parameters=merged)


class Rig:
    """Nodes on an in-process bus (virtual time) and a test node that records what crosses it."""

    def __init__(self):
        self.bus = InProcessTransport()
        self.nodes: dict[str, object] = {}
        self.h = self.bus.create_node("rig")
        self.commands: list[tuple[float, np.ndarray]] = []
        self.joint_states: list[tuple[float, JointState]] = []
        self.infos: list[PolicyInfo] = []
        self.events: list[dict] = []
        self.status: dict[str, dict] = {}
        self.h.subscribe(topics.ROBOT_COMMAND, Float64MultiArray,
                         lambda m: self.commands.append((self.bus.now(), array_of(m))))
        self.h.subscribe(topics.JOINT_STATES, JointState, lambda m: self.joint_states.append((self.bus.now(), m)))
        self.h.subscribe(topics.POLICY_INFO, Float64MultiArray, self._on_info)
        self.h.subscribe(topics.EPISODE, String, lambda m: self.events.append(topics.parse_event(m)))

    def _on_info(self, msg: Float64MultiArray) -> None:
        info = PolicyInfo.from_msg(msg, N)
        if info is not None:
            self.infos.append(info)

    def add(self, node_spec: NodeSpec):
        node = self.nodes[node_spec.name] = build_node(node_spec, self.bus)
        self.h.subscribe(status_topic(node_spec.name), String,
                         lambda m, n=node_spec.name: self.status.__setitem__(n, parse_status(m)), LATCHED)
        return node

    def publisher(self, topic: str, msg_type, qos=None):
        return self.h.publisher(topic, msg_type, qos) if qos is not None else self.h.publisher(topic, msg_type)

    def run_until(self, condition: Callable[[], bool], step: float = PERIOD, real_timeout: float = 60.0,
                  sleep: float = 0.0) -> bool:
        """Advance virtual time tick by tick until `condition()` (background threads, e.g. a weights loader, get
        `sleep` seconds of real time per tick)."""
        deadline = time.monotonic() + real_timeout
        while not condition() and time.monotonic() < deadline:
            self.bus.advance(step)
            if sleep:
                time.sleep(sleep)
        return condition()

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
            node.handle.destroy()
        self.nodes.clear()


def tiny_weights(directory, version: int, mean_bias: float, obs_dim: int = STATE_DIM, action_dim: int = N,
                 overrides: tuple[str, ...] = ()):
    """Residual weights whose deterministic residual is `scale * tanh(mean_bias)` on every joint, whatever the
    observation (the mean head's kernel is zero): an output a test can predict exactly. No compilation needed.
    `overrides`: recipe settings ("key=value") on top of the tiny recipe's."""
    import jax
    import jax.numpy as jnp

    from hw.nodes.learner import parse_overrides
    from hw.weights import actor_shapes, write_weights
    from robot_rl.rl.agent import ResidualAgent
    from robot_rl.rl.config import load_recipe

    cfg = load_recipe("ours", **parse_overrides((*TINY_OVERRIDES, *overrides)))
    agent = ResidualAgent(cfg, obs_dim, action_dim)
    params = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.01, s.dtype), actor_shapes(agent))
    params["mean"]["kernel"] = jnp.zeros_like(params["mean"]["kernel"])
    params["mean"]["bias"] = jnp.full_like(params["mean"]["bias"], mean_bias)
    announcement = write_weights(directory, version, cfg, obs_dim, action_dim, params)
    return announcement, cfg.residual_scale * np.tanh(mean_bias)


GATE_CALLS: list[int] = []


def refuse_version_4(announcement, weights) -> bool:
    """A deployment gate (the actor's `gate` hook) for the tests: refuses version 4, records what it was asked."""
    GATE_CALLS.append(announcement.version)
    return announcement.version != 4

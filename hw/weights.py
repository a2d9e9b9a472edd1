"""Residual weights as files: written by the learner, announced on `/robot_rl/weights`, verified by the actor.

A version is two files in the learner's weights folder: `residual_v<version>.msgpack` (the residual actor's
parameters, flax msgpack: no pickle, no code) and a `.json` sidecar (format, version, sha256 of the msgpack bytes,
the agent config and sizes needed to rebuild the network). Both are written atomically (temporary file + rename,
`robot_rl.files.write_atomic`), sidecar last, and only then announced as JSON `{version, path, sha256}`.

The actor trusts nothing it is told: `load_weights` re-hashes the bytes and compares them with the announcement
and the sidecar, restores the tree without a template and checks every leaf's path and shape against the network
the sidecar describes. Any mismatch raises `WeightsError`; the actor then keeps the weights it runs. Loading and
compiling happen on `WeightsLoader`'s thread, so a hot swap never stalls the control loop.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hw.msgs import String  # noqa: E402
from robot_rl.files import write_atomic, write_json  # noqa: E402
from robot_rl.rl.agent import ResidualAgent  # noqa: E402
from robot_rl.rl.checkpoint import sha256_hex  # noqa: E402
from robot_rl.rl.config import AgentConfig  # noqa: E402
from robot_rl.rl.residual import ExplorationNoise  # noqa: E402

FORMAT = "robot_rl.residual_weights"


class WeightsError(Exception):
    """A weights file that must not be run; `reason` (hash, unreadable, sidecar, network, version, sizes) is what
    the actor counts."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Announcement:
    version: int
    path: str
    sha256: str

    def to_msg(self) -> String:
        return String(data=json.dumps({"version": self.version, "path": self.path, "sha256": self.sha256}))

    @classmethod
    def parse(cls, msg: String) -> Announcement | None:
        try:
            data = json.loads(msg.data)
            version, path, digest = data["version"], data["path"], data["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return None
        if not (isinstance(version, int) and version > 0 and isinstance(path, str) and isinstance(digest, str)):
            return None
        return cls(version, path, digest)


def weights_path(directory: str | Path, version: int) -> Path:
    return Path(directory) / f"residual_v{version:06d}.msgpack"


def latest_version(directory: str | Path) -> int:
    """The highest version with both files in `directory` (0 when there is none)."""
    versions = [int(p.stem.removeprefix("residual_v")) for p in Path(directory).glob("residual_v*.msgpack")
                if p.with_suffix(".json").is_file()]
    return max(versions, default=0)


def write_weights(directory: str | Path, version: int, cfg: AgentConfig, obs_dim: int, action_dim: int,
                  actor_params: Any, meta: dict | None = None, keep: int = 3) -> Announcement:
    """Write one version (msgpack, then sidecar) and drop all but the newest `keep`; returns its announcement."""
    data = flax.serialization.to_bytes(jax.device_get(actor_params))
    path = weights_path(directory, version)
    digest = sha256_hex(data)
    sidecar = {"format": FORMAT, "version": version, "sha256": digest, "bytes": len(data), "agent": cfg.to_dict(),
               "obs_dim": obs_dim, "action_dim": action_dim, **(meta or {})}
    write_atomic(path, data)
    write_json(path.with_suffix(".json"), sidecar)
    for old in sorted(Path(directory).glob("residual_v*.msgpack"))[:-keep]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return Announcement(version, str(path.resolve()), digest)


@dataclass
class ResidualWeights:
    version: int
    sha256: str
    agent: ResidualAgent
    params: Any
    sidecar: dict


def load_weights(path: str | Path, sha256: str | None = None) -> ResidualWeights:
    """Read and verify one weights file (see the module docstring); raises WeightsError."""
    path = Path(path)
    try:
        data = path.read_bytes()
        sidecar = json.loads(path.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError("unreadable", f"cannot read weights {path} and its sidecar: {exc}") from None
    digest = sha256_hex(data)
    if sha256 is not None and digest != sha256:
        raise WeightsError("hash", f"weights {path} hash {digest[:12]} != announced {sha256[:12]}")
    if sidecar.get("format") != FORMAT or sidecar.get("sha256") != digest:
        raise WeightsError("sidecar", f"weights {path} do not match their sidecar (format or sha256)")
    try:
        cfg = AgentConfig.from_dict(sidecar["agent"])
        agent = ResidualAgent(cfg, int(sidecar["obs_dim"]), int(sidecar["action_dim"]))
        restored = flax.serialization.msgpack_restore(data)
    except Exception as exc:  # a sidecar or payload that does not describe our network
        raise WeightsError("network", f"weights {path} do not describe a residual actor: {exc}") from None
    expected = actor_shapes(agent)
    have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(restored)}
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    if have != want:
        raise WeightsError("network", f"weights {path} do not fit the network their sidecar describes")
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), restored)
    return ResidualWeights(int(sidecar["version"]), digest, agent, params, sidecar)


def actor_shapes(agent: ResidualAgent) -> Any:
    """The actor parameter tree (shapes only, no compute) of `agent`."""
    actor_in = agent.obs_dim + (agent.action_dim if agent.cfg.enabled else 0)
    return jax.eval_shape(agent.actor_net.init, jax.random.PRNGKey(0), jnp.zeros((1, actor_in)))["params"]


def run_jax_inline() -> None:
    """Run XLA's CPU computations synchronously on the calling thread: for a control loop that evaluates a small
    network once per tick. With the default asynchronous dispatch every call is handed to a pool thread, and on a
    busy machine waking that thread costs milliseconds (measured here, 20 ms between calls: p99 5.5 ms -> 0.8 ms).
    Takes effect before the process's first JAX computation."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


@functools.lru_cache(maxsize=8)
def _residual_fns(agent: ResidualAgent) -> tuple[Callable, Callable]:
    """Jitted residual functions, one compilation per agent config (versions of the same learner share it)."""
    deterministic = jax.jit(lambda p, o, b: agent.deterministic_residual(p, o, b))
    sample = jax.jit(lambda p, o, b, noise: agent.sample_residual(p, o, b, None, noise)[0])
    return deterministic, sample


class ResidualPolicy:
    """`residual(state, base) -> (action_dim,)` in normalized units: the learner's actor, deterministic or sampled
    (exploration while the learner trains on what the robot does)."""

    def __init__(self, weights: ResidualWeights, stochastic: bool = False, seed: int = 0):
        self.weights, self.stochastic = weights, stochastic
        self._deterministic, self._sample = _residual_fns(weights.agent)
        agent = weights.agent  # the recipe's exploration noise, correlated across steps as in simulation
        self._noise = ExplorationNoise(np.random.default_rng(seed), 1, agent.action_dim, agent.cfg.noise_correlation)

    @property
    def version(self) -> int:
        return self.weights.version

    def __call__(self, state: np.ndarray, base: np.ndarray) -> np.ndarray:
        obs = np.asarray(state, np.float32)[None]
        b = np.asarray(base, np.float32)[None]
        if self.stochastic:
            out = self._sample(self.weights.params, obs, b, self._noise())
        else:
            out = self._deterministic(self.weights.params, obs, b)
        return np.asarray(out, np.float64)[0]

    def warm_up(self) -> None:
        """Compile before the swap, so the first control step on new weights is as fast as the others."""
        self(np.zeros(self.weights.agent.obs_dim), np.zeros(self.weights.agent.action_dim))
        self.new_episode()

    def new_episode(self) -> None:
        """A fresh start for the exploration noise (the actor calls this when an episode starts)."""
        self._noise.reset(np.ones(1, bool))


Gate = Callable[[Announcement, ResidualWeights], bool]


class WeightsLoader:
    """Loads announced weights on a background thread; the control thread picks up the result with `poll()`.

    Only the newest announcement matters: an older or already-running version is skipped. Failures are counted by
    reason in `counts` (read by the actor's status) and never interrupt the weights in use.
    """

    def __init__(self, obs_dim: int, action_dim: int, stochastic: bool, seed: int, gate: Gate | None = None):
        self.obs_dim, self.action_dim, self.stochastic, self.seed, self.gate = (
            obs_dim, action_dim, stochastic, seed, gate)
        self.counts: dict[str, int] = {}
        self._requests: queue.Queue[Announcement | None] = queue.Queue()
        self._ready: ResidualPolicy | None = None
        self._lock = threading.Lock()
        self._newest = 0
        self._thread = threading.Thread(target=self._run, name="weights-loader", daemon=True)
        self._thread.start()

    def submit(self, announcement: Announcement) -> None:
        self._requests.put(announcement)

    def poll(self) -> ResidualPolicy | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5.0)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def _run(self) -> None:
        while (announcement := self._requests.get()) is not None:
            if announcement.version <= self._newest:
                self._count("weights_stale")
                continue
            try:
                policy = self.load(announcement)
            except WeightsError as exc:
                self._count(f"weights_rejected_{exc.reason}")
                continue
            if self.gate is not None and not self.gate(announcement, policy.weights):
                self._count("weights_rejected_gate")
                continue
            with self._lock:
                self._newest = announcement.version
                self._ready = policy
            self._count("weights_loaded")

    def load_file(self, path: str) -> ResidualPolicy:
        """Load a weights file directly (the actor's starting residual), trusting its own sidecar's hash."""
        weights = load_weights(path)
        policy = self._checked(weights)
        with self._lock:
            self._newest = max(self._newest, weights.version)
        return policy

    def load(self, announcement: Announcement) -> ResidualPolicy:
        weights = load_weights(announcement.path, announcement.sha256)
        if weights.version != announcement.version:
            raise WeightsError("version", f"{announcement.path} holds version {weights.version}, "
                                          f"not {announcement.version}")
        return self._checked(weights)

    def _checked(self, weights: ResidualWeights) -> ResidualPolicy:
        sizes = (weights.agent.obs_dim, weights.agent.action_dim)
        if sizes != (self.obs_dim, self.action_dim):
            raise WeightsError("sizes", f"weights are for (obs, action) sizes {sizes}, this actor has "
                                        f"{(self.obs_dim, self.action_dim)}")
        policy = ResidualPolicy(weights, self.stochastic, self.seed)
        policy.warm_up()
        return policy

"""Candidate policies, as users name them: load base and residual checkpoints, run them batched for the evaluator and
step by step in a mirror.

A candidate spec is one string:
- `BASE` -- a base-policy checkpoint (`policy.safetensors` from `robot-rl train-base`);
- `BASE+RESIDUAL` -- that base with a residual on top: RESIDUAL is a learner checkpoint folder (its `latest.json`
  is used) or one `ckpt_*.msgpack` file. A residual is only meaningful on the base it was trained on, so the pair is
  one spec.
The spec string is the candidate's name in tables and JSON. This module is the one place that loads candidates
(`robot-rl rank`, the benchmarks, the demo, sim-to-real ranking).

Two ways to run a candidate, both in normalized action units:
- `candidate(obs)` -- chunks for a batch of states (B, H, A), what the chunked-TD evaluator calls. With a residual,
  every action of the chunk gets the residual computed at the chunk's first state (the critic scores a chunk from
  one state; at run time the residual sees each step's state);
- `candidate.actor()` -- one action per control step through the chunk scheduler, plus the residual per step: what
  runs in a mirror (`rollout_values`) and on a robot.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.errors import UserError

SEPARATOR = "+"


@dataclass
class Residual:
    """A residual actor restored from a learner checkpoint; deterministic (its mean), as deployed."""

    agent: Any  # robot_rl.rl.agent.ResidualAgent
    state: Any  # its TrainState
    path: Path

    @property
    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        """{"image_<camera>": (H, W, 3)} of the cameras it reads (empty for a state-only residual)."""
        return dict(self.agent.image_shapes)

    def __call__(self, obs: Mapping[str, np.ndarray], base: np.ndarray) -> np.ndarray:
        """Residuals (B, A) for a batch of observations (see `inputs`) and base actions (B, A)."""
        return self.act(self.inputs(obs), base)

    def act(self, inputs: np.ndarray | dict[str, np.ndarray], base: np.ndarray) -> np.ndarray:
        """Residuals (B, A) for what `inputs` made of a batch, and base actions (B, A)."""
        return self.agent.act(self.state, inputs, base, deterministic=True)

    def inputs(self, obs: Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """What the residual reads of a batch of observations {"state": (B, d), camera: (B, H, W, 3), ...} (or
        histories with a step axis after the batch axis: the latest step is read), checked."""
        from robot_rl.eval.chunked_td import latest_step
        from robot_rl.rl.encoder import STATE
        from robot_rl.rl.loop import flat_obs

        wanted = {STATE: 1, **{key: 3 for key in self.agent.image_keys}}  # dims of one step of each key
        missing = [key for key in wanted if key not in obs]
        if missing:
            raise UserError(f"residual {self.path} reads {missing}, which its caller does not pass (it passes "
                            f"{sorted(obs)}); with cameras set evaluator.encoder.image_keys to "
                            f"{['obs/' + k for k in self.agent.image_keys]}")
        latest = {key: latest_step(obs[key], dims) for key, dims in wanted.items()}
        latest[STATE] = latest[STATE].reshape(len(latest[STATE]), -1)
        for key, shape in self.agent.image_shapes.items():
            if latest[key].shape[1:] != shape:
                raise UserError(f"residual {self.path} reads {key} at {shape}, given {latest[key].shape[1:]}; "
                                "give the images at the size it was trained on (the mirror's image_size)")
        return flat_obs(latest, STATE, self.agent.image_keys)


def load_residual(path: str | Path) -> Residual:
    """Restore a residual from a learner checkpoint folder or file (sha256-verified by `robot_rl.rl.checkpoint`)."""
    from robot_rl.rl.agent import ResidualAgent
    from robot_rl.rl.checkpoint import load_checkpoint, read_checkpoint
    from robot_rl.rl.config import AgentConfig

    path = Path(path)
    if not path.exists():
        raise UserError(f"residual checkpoint {path} does not exist; give a learner checkpoint folder or file")
    _, sidecar = read_checkpoint(path)
    meta = sidecar.get("meta", {})
    if not {"agent", "obs_dim", "action_dim"} <= set(meta):
        raise UserError(f"{path} is not a residual learner checkpoint (its sidecar lacks agent, obs_dim, action_dim)")
    agent = ResidualAgent(AgentConfig.from_dict(meta["agent"]), int(meta["obs_dim"]), int(meta["action_dim"]),
                          meta.get("image_shapes"))
    state, _ = load_checkpoint(path, agent.init(0))
    return Residual(agent, state, path)


@dataclass
class Candidate:
    """One policy to rank: a base policy (torch, chunks) and optionally a residual (JAX, per step) on top."""

    name: str
    policy: Any  # robot_rl.policies.ChunkPolicy
    residual: Residual | None = None

    @property
    def spec(self) -> Any:
        return self.policy.spec

    @property
    def n_obs_steps(self) -> int:
        """The evaluator passes this many past states per slot (see ChunkedTDEvaluator.policy_chunks)."""
        return int(self.spec.n_obs_steps)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Chunks (B, H, A) for a batch of observations {key: (B, *shape)} or histories {key: (B, n_obs, *shape)}."""
        import torch

        spec = self.spec
        missing = [key for key in spec.obs_keys if key not in obs]
        if missing:
            raise UserError(f"candidate {self.name} reads observation {missing[0]!r}, which the evaluator does not "
                            f"pass (it passes {sorted(obs)}); set evaluator.obs_key to one the policy reads")
        history = {}
        for key in spec.obs_keys:
            value = np.asarray(obs[key], np.float32)
            if value.ndim == 1 + len(spec.obs_shapes[key]):  # one state per slot: repeat it as the history
                value = np.repeat(value[:, None], spec.n_obs_steps, axis=1)
            history[key] = value[:, -spec.n_obs_steps:]
        from robot_rl.policies.policy import torch_threads

        with torch.inference_mode(), torch_threads(self.policy.threads):  # one thread: no oversubscribed small CPU
            tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in history.items()}
            chunks = self.policy.model.sample(tensors, self.policy.generator).clamp(-1.0, 1.0).numpy()
        if self.residual is not None:
            from robot_rl.rl.residual import compose_action

            inputs = self.residual.inputs(obs)  # the chunk's first state, for every step of it
            for k in range(chunks.shape[1]):
                chunks[:, k] = compose_action(chunks[:, k], self.residual.act(inputs, chunks[:, k]))
        return chunks.astype(np.float32)

    def mirror(self, task: str | None = None, variant: str | Mapping[str, Any] = "nominal") -> Any:
        """A mirror env (of `task`, default the base's) rendering every camera the base and the residual read, at the
        size they read it."""
        from robot_rl.workflows.collect import make_task_env, mirror_cameras

        shapes = {key: self.spec.obs_shapes[key] for key in self.spec.image_keys()}
        for key, shape in (self.residual.image_shapes if self.residual is not None else {}).items():
            if tuple(shapes.setdefault(key, shape)) != tuple(shape):
                raise UserError(f"candidate {self.name}: the base reads {key} at {tuple(shapes[key])}, the residual "
                                f"at {tuple(shape)}; a mirror renders one size: pair a residual with its base")
        cameras = mirror_cameras(shapes, f"candidate {self.name}")
        return make_task_env(task or self.spec.task, variant, cameras.get("cameras", ()), cameras.get("image_size"),
                             None)

    def actor(self, mode: str = "open_loop") -> StepActor:
        return StepActor(self, mode)


class StepActor:
    """One action per control step: the base through the chunk scheduler, the residual on each step's state."""

    def __init__(self, candidate: Candidate, mode: str = "open_loop"):
        from robot_rl.policies import ChunkScheduler

        self.candidate = candidate
        self.scheduler = ChunkScheduler(candidate.policy, mode=mode)

    def reset(self, seed: int | None = None) -> None:
        self.scheduler.reset(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        base, _ = self.scheduler.step(obs)
        residual = self.candidate.residual
        if residual is None:
            return base
        from robot_rl.rl.residual import compose_action

        batch = {key: np.asarray(value)[None] for key, value in obs.items()}
        return compose_action(base, residual(batch, base[None])[0]).astype(np.float32)

    def close(self) -> None:
        self.scheduler.close()


class ChunkActor:
    """Runs a chunk function (a candidate, a steered policy) step by step: keeps the last n observations of `keys`,
    executes `n_action_steps` of each chunk. One loop for a base and its steered version, so a comparison differs only
    in where chunks come from."""

    def __init__(self, chunk_fn: Callable[[dict[str, np.ndarray]], np.ndarray], n_obs_steps: int,
                 n_action_steps: int, reset: Callable[[int | None], None] | None = None,
                 keys: Sequence[str] = ("state",)):
        self.chunk_fn, self.n_obs, self.n_act, self._reset = chunk_fn, n_obs_steps, n_action_steps, reset
        self.keys = tuple(keys)

    def reset(self, seed: int | None = None) -> None:
        self.history: dict[str, list[np.ndarray]] = {}
        self.queue: list[np.ndarray] = []
        if self._reset is not None:
            self._reset(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        for key in self.keys:
            value = np.asarray(obs[key], np.uint8 if key.startswith("image_") else np.float32)
            self.history[key] = (self.history.get(key) or [value] * self.n_obs)[1:] + [value]
        if not self.queue:
            chunk = self.chunk_fn({key: np.stack(values)[None] for key, values in self.history.items()})[0]
            self.queue = list(chunk[:self.n_act])
        return self.queue.pop(0)


def parse_spec(spec: str) -> tuple[Path, Path | None]:
    """`BASE` or `BASE+RESIDUAL` -> (base path, residual path or None)."""
    base, _, residual = str(spec).partition(SEPARATOR)
    if not base:
        raise UserError(f"candidate {spec!r} names no base policy; write BASE.safetensors[+RESIDUAL_DIR]")
    return Path(base), Path(residual) if residual else None


def load_candidate(spec: str, seed: int = 0) -> Candidate:
    """Load one candidate from its spec (see the module docstring); a missing or broken file is a UserError."""
    from robot_rl.policies import load_policy

    base, residual_path = parse_spec(spec)
    if not base.is_file():
        raise UserError(f"candidate {spec!r}: base policy {base} does not exist; give a policy.safetensors from "
                        "robot-rl train-base")
    policy = load_policy(base, seed=seed)
    residual = load_residual(residual_path) if residual_path is not None else None
    if residual is not None:
        from robot_rl.rl.encoder import STATE

        if STATE not in policy.spec.obs_shapes:
            raise UserError(f"candidate {spec!r}: the residual reads the state vector, which base {base} does not "
                            f"(it reads {list(policy.spec.obs_keys)}); pair a residual with the base it was trained on")
        state_dim = int(np.prod(policy.spec.obs_shapes[STATE]))
        if (residual.agent.obs_dim, residual.agent.action_dim) != (state_dim, policy.spec.action_dim):
            raise UserError(f"candidate {spec!r}: the residual expects obs {residual.agent.obs_dim} / action "
                            f"{residual.agent.action_dim}, the base gives {state_dim} / {policy.spec.action_dim}; "
                            "pair a residual with the base it was trained on")
    return Candidate(str(spec), policy, residual)


def load_candidates(specs: list[str], seed: int = 0) -> list[Candidate]:
    if not specs:
        raise UserError("no candidates: give candidates=[BASE.safetensors,BASE.safetensors+RESIDUAL_DIR,...]")
    if len(set(map(str, specs))) != len(specs):
        raise UserError(f"candidates {list(specs)} name a policy twice; give each once")
    return [load_candidate(spec, seed) for spec in specs]


def rollout_values(actor: Any, env: Any, episodes: int, gamma: float, seed: int = 0, desc: str = "rollout",
                   progress: bool = True) -> dict[str, float]:
    """Roll `actor` (reset(seed), __call__(obs) -> action) out in `env`; the true value is the mean discounted return
    from the initial state (the quantity the evaluators estimate), with success rate and mean length beside it."""
    from tqdm import tqdm

    values, successes, lengths = [], [], []
    for episode in tqdm(range(episodes), desc=desc, unit="ep", file=sys.stderr, disable=not progress, leave=False):
        obs, _ = env.reset(seed=seed + episode)
        actor.reset(seed + episode)
        value, t, done, success = 0.0, 0, False, False
        while not done:
            obs, reward, success, truncated, _ = env.step(actor(obs))
            value += gamma**t * float(reward)
            t, done = t + 1, success or truncated
        values.append(value)
        successes.append(float(success))
        lengths.append(t)
    return {"value": float(np.mean(values)), "success_rate": float(np.mean(successes)),
            "mean_length": float(np.mean(lengths)), "episodes": episodes}

"""The residual RL training loop, straight-line like CleanRL: act, step, store, update, evaluate.

Everything concrete comes in as an argument, so the `train-residual` workflow can plug in sim mirrors, torch base
policies and the store's samplers: `envs` is a gymnasium env or vector env (same-step autoreset), `base` maps a batch
of observations to a batch of base actions (NumPy in and out; None from scratch; see `StatefulBase` for bases with
per-env state), `replay` (default: an `EpisodeReplay`) receives every online step (`add`) and `sample(n)` returns
demo/online-mixed n-step batches; put demos into it before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.rl.agent import ResidualAgent, TrainState, new_key
from robot_rl.rl.checkpoint import latest_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from robot_rl.rl.config import AgentConfig
from robot_rl.rl.encoder import STATE
from robot_rl.rl.replay import EpisodeCallback, EpisodeReplay, replay_spec
from robot_rl.rl.residual import ExplorationNoise, compose_action, progressive_mask
from robot_rl.rl.reward_scaling import ReturnScaler

BasePolicy = Callable[[Any], np.ndarray]


class StatefulBase(Protocol):
    """A base policy with per-env state (e.g. a chunk queue): `reset(mask)` is called when those envs' episodes end,
    before the base sees their first observations."""

    def __call__(self, obs: Any) -> np.ndarray: ...
    def reset(self, mask: np.ndarray) -> None: ...


class Supervisor(Protocol):
    """Who may take over (a simulated person, `robot_rl.rl.takeover.ExpertTakeover`): `__call__(obs, proposal)` ->
    (human actions, NaN rows where the policy acts; intervention mask), `reset(mask)` when those envs' episodes end."""

    def __call__(self, obs: Any, proposal: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def reset(self, mask: np.ndarray) -> None: ...


class Replay(Protocol):
    def add(self, step: dict[str, np.ndarray]) -> None: ...  # one vector step; see EpisodeReplay.add
    def sample(self, batch_size: int) -> dict[str, np.ndarray]: ...
    def __len__(self) -> int: ...


@dataclass
class LoopConfig:
    total_steps: int = 10_000  # online env steps summed over the vector envs, warm-up included
    seed: int = 0
    eval_every: int = 0  # env steps between evaluations (0: only before and after training)
    eval_episodes: int = 10
    log_every: int = 1000  # env steps between metric records
    replay_capacity: int = 200_000
    obs_key: str | None = None  # dict observations: the flat vector the networks read (e.g. "state")
    # with evaluations, checkpoint_dir/best also holds the state of the most successful evaluation so far (the
    # untrained one at step 0, i.e. the base alone, included): what to deploy when a run peaks early
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # env steps between checkpoints (0: only at the end, if checkpoint_dir is set)
    resume: bool = False  # continue from checkpoint_dir's latest checkpoint (the caller refills the replay)


@dataclass
class TrainResult:
    agent: ResidualAgent
    state: TrainState
    env_steps: int
    evals: list[dict] = field(default_factory=list)  # {"env_steps", "success", "return", "episodes"}
    logs: list[dict] = field(default_factory=list)
    takeover_share: float = 0.0  # share of the online steps run by this call that a supervisor took over
    best: dict | None = None  # the first most successful evaluation (env_steps, success, ...); see LoopConfig


def best_dir(checkpoint_dir: str | Path) -> Path:
    """Where `train` keeps the checkpoint of its most successful evaluation."""
    return Path(checkpoint_dir) / "best"


def as_vector_env(env: gym.Env | gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """A single env becomes a one-env vector env; a vector env must reset in the same step (final obs in info)."""
    if not isinstance(env, gym.vector.VectorEnv):
        return gym.vector.SyncVectorEnv([lambda: env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    mode = env.metadata.get("autoreset_mode")
    if mode not in (gym.vector.AutoresetMode.SAME_STEP, "SameStep"):
        raise UserError(f"vector env uses autoreset mode {mode}; build it with autoreset_mode=AutoresetMode.SAME_STEP "
                        "so the final observation of each episode reaches the learner")
    return env


def flat_obs(obs: Any, obs_key: str | None, image_keys: Sequence[str] = ()) -> np.ndarray | dict[str, np.ndarray]:
    """The observation the agent reads: the flat vector, or with `image_keys` (a recipe with cameras) a dict of that
    vector under "state" and the uint8 images under their own keys."""
    if isinstance(obs, dict):
        if obs_key is None or obs_key not in obs:
            raise UserError(f"dict observations {sorted(obs)} need obs_key set to the vector the learner reads")
        missing = [k for k in image_keys if k not in obs]
        if missing:
            raise UserError(f"the recipe reads camera(s) {missing} but the observations hold only {sorted(obs)}; "
                            "make the envs with those cameras or drop them from encoder.image_keys")
        state = np.asarray(obs[obs_key], np.float32)
        if image_keys:
            return {STATE: state, **{k: np.asarray(obs[k], np.uint8) for k in image_keys}}
        return state
    if image_keys:
        raise UserError(f"the recipe reads camera(s) {list(image_keys)} but the observations are flat arrays; "
                        "use dict observations with the images")
    return np.asarray(obs, np.float32)


def replay_obs(obs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An agent observation as replay keys: the flat vector under "obs", images under their own keys."""
    if isinstance(obs, dict):
        return {"obs": obs[STATE], **{k: v for k, v in obs.items() if k != STATE}}
    return {"obs": obs}


def base_actions(base: BasePolicy | None, obs: Any, num_envs: int, action_dim: int) -> np.ndarray:
    if base is None:
        return np.zeros((num_envs, action_dim), np.float32)
    action = np.asarray(base(obs), np.float32)
    if action.shape != (num_envs, action_dim):
        raise UserError(f"base policy returned shape {action.shape}, expected {(num_envs, action_dim)}; "
                        "it must map a batch of observations to a batch of actions")
    return action


def reset_base(base: BasePolicy | None, mask: np.ndarray) -> None:
    if mask.any() and hasattr(base, "reset"):
        base.reset(mask)


def evaluate(envs: gym.vector.VectorEnv, episodes: int, base: BasePolicy | None, agent: ResidualAgent | None = None,
             state: TrainState | None = None, obs_key: str | None = None, seed: int = 0) -> dict[str, float]:
    """Success rate (an episode succeeds when it terminates: reward on success, termination on success) and mean
    return of the deterministic policy; with `agent=None`, of the base alone."""
    envs = as_vector_env(envs)
    n, action_dim = envs.num_envs, envs.single_action_space.shape[0]
    per_env = math.ceil(episodes / n)  # a fixed count per env: stopping at the first `episodes` finished ones
    returns = [[] for _ in range(n)]   # would over-sample short (often successful) episodes
    successes = [[] for _ in range(n)]
    ep_return = np.zeros(n)
    obs, _ = envs.reset(seed=seed)
    reset_base(base, np.ones(n, bool))
    while min(len(r) for r in returns) < per_env:
        action = base_actions(base, obs, n, action_dim)
        if agent is not None:
            action = compose_action(action, agent.act(state, flat_obs(obs, obs_key, agent.image_keys), action,
                                                      deterministic=True))
        obs, reward, terminated, truncated, _ = envs.step(action)
        reset_base(base, terminated | truncated)
        ep_return += reward
        for i in np.flatnonzero(terminated | truncated):
            if len(returns[i]) < per_env:
                returns[i].append(float(ep_return[i]))
                successes[i].append(bool(terminated[i]))
            ep_return[i] = 0.0
    return {"success": float(np.mean(successes)), "return": float(np.mean(returns)), "episodes": per_env * n}


EvalEnvs = gym.vector.VectorEnv | dict[str, gym.vector.VectorEnv]


def evaluate_all(eval_envs: EvalEnvs, episodes: int, base: BasePolicy | None, agent: ResidualAgent,
                 state: TrainState, obs_key: str | None, seed: int) -> dict[str, float]:
    """`evaluate` on each named env set: the first one's figures as `success`/`return`, every one's as
    `success/<name>` (e.g. the nominal mirror and the variants that stand in for the robot)."""
    if not isinstance(eval_envs, dict):
        eval_envs = {"": eval_envs}
    out: dict[str, float] = {}
    for i, (name, envs) in enumerate(eval_envs.items()):
        figures = evaluate(envs, episodes, base, agent, state, obs_key, seed)
        if i == 0:
            out.update(figures)
        if name:
            out.update({f"success/{name}": figures["success"], f"return/{name}": figures["return"]})
    return out


def train(envs: gym.Env | gym.vector.VectorEnv, cfg: AgentConfig, loop: LoopConfig, base: BasePolicy | None = None,
          replay: Replay | None = None, eval_envs: EvalEnvs | None = None, eval_base: BasePolicy | None = None,
          demo_rewards: Sequence[np.ndarray] = (), on_record: Callable[[str, dict], None] | None = None,
          on_episode: EpisodeCallback | None = None, supervisor: Supervisor | None = None,
          run_meta: dict[str, Any] | None = None) -> TrainResult:
    """Run residual RL for `loop.total_steps` env steps. `on_record(kind, record)` sees every "log" and "eval"
    record as it is made (for CSV / TensorBoard / progress bars in the workflow); `on_episode(steps, env)` every
    finished online episode (to write it to a store), when the default replay is used. `demo_rewards` (one reward
    array per demo episode) seed the return-based reward scale, so it is right before the first online success.
    `eval_base` (default: `base`) must be a separate instance when the base keeps per-env state. With a
    `supervisor`, training episodes may be taken over: its action runs, the step is recorded as an intervention with
    the policy's proposal kept (`policy_action`), and `takeover_rate` (share of steps taken over) joins the logs;
    evaluations never have one. `run_meta`: the caller's settings, recorded in every checkpoint's meta so a resumed
    run can be checked against them."""
    if cfg.enabled and base is None:
        raise UserError("a residual recipe needs a base policy; pass base=... or set residual.enabled=false")
    envs = as_vector_env(envs)
    eval_base = base if eval_base is None else eval_base
    num_envs, action_dim = envs.num_envs, envs.single_action_space.shape[0]
    obs, _ = envs.reset(seed=loop.seed)
    image_keys = tuple(cfg.encoder.image_keys)
    first = flat_obs(obs, loop.obs_key, image_keys)
    obs_dim = (first[STATE] if image_keys else first).shape[-1]
    image_shapes = {k: first[k].shape[1:] for k in image_keys}
    agent = ResidualAgent(cfg, obs_dim, action_dim, image_shapes)
    state = agent.init(loop.seed)
    if replay is None:
        cache = ReplayCache(loop.replay_capacity, replay_spec(obs_dim, action_dim, image_shapes=image_shapes))
        replay = EpisodeReplay(cache, cfg, num_envs, loop.seed, on_episode)
    scaler = ReturnScaler(num_envs, cfg.gamma, cfg.g_max)
    for rewards in demo_rewards:
        scaler.update_episode(rewards)
    rng = np.random.default_rng(loop.seed)
    act_key = new_key(loop.seed + 1)
    result = TrainResult(agent, state, 0)
    start_iter, update_calls = 0, 0
    if loop.resume and loop.checkpoint_dir and latest_checkpoint(loop.checkpoint_dir):
        state, sidecar = load_checkpoint(loop.checkpoint_dir, state)
        start_iter, update_calls = sidecar["meta"]["iteration"], sidecar["meta"]["update_calls"]
        scaler.load_state_dict(sidecar["meta"]["reward_scaler"])
        if latest_checkpoint(best_dir(loop.checkpoint_dir)):  # the best so far stays the bar to beat
            result.best = read_checkpoint(best_dir(loop.checkpoint_dir))[1]["meta"]["evaluation"]
        obs, _ = envs.reset(seed=loop.seed + start_iter)  # fresh initial states and noise, not the first ones again
        rng = np.random.default_rng([loop.seed, start_iter])

    def record(kind: str, values: dict) -> None:
        (result.evals if kind == "eval" else result.logs).append(values)
        if on_record is not None:
            on_record(kind, values)

    def run_eval(iteration: int) -> None:
        figures = {"env_steps": iteration * num_envs, **evaluate_all(eval_envs, loop.eval_episodes, eval_base, agent,
                                                                     state, loop.obs_key, loop.seed)}
        record("eval", figures)
        if result.best is None or figures["success"] > result.best["success"]:
            result.best = figures
            if loop.checkpoint_dir:
                checkpoint(iteration, best_dir(loop.checkpoint_dir), keep=1, evaluation=figures)

    def checkpoint(iteration: int, directory: str | Path, keep: int = 2, **extra: Any) -> None:
        meta = {**(run_meta or {}), "agent": cfg.to_dict(), "obs_dim": obs_dim, "action_dim": action_dim,
                "iteration": iteration, "update_calls": update_calls, "env_steps": iteration * num_envs,
                "reward_scaler": scaler.state_dict(), **extra}
        if image_keys:
            meta["image_shapes"] = {k: list(shape) for k, shape in image_shapes.items()}
        save_checkpoint(directory, state, meta, step=iteration * num_envs, keep=keep)

    if eval_envs is not None and start_iter == 0:
        run_eval(0)
    reset_base(base, np.ones(num_envs, bool))
    base_action = base_actions(base, obs, num_envs, action_dim)
    critic_warm = start_iter * num_envs >= cfg.warmup_steps
    iterations = math.ceil(loop.total_steps / num_envs)
    no_intervention, no_human = np.zeros(num_envs, bool), np.full((num_envs, action_dim), np.nan, np.float32)
    if supervisor is not None:
        supervisor.reset(np.ones(num_envs, bool))
    noise = ExplorationNoise(rng, num_envs, action_dim, cfg.noise_correlation) if cfg.noise_correlation > 0 else None
    window_steps = window_taken = takeover_steps = 0
    for it in range(start_iter, iterations):
        env_steps = it * num_envs
        agent_obs = flat_obs(obs, loop.obs_key, image_keys)
        # act: base + uniform noise while warming up, then base + residual (progressively, if configured)
        if env_steps < cfg.warmup_steps:
            residual = rng.uniform(-cfg.warmup_noise, cfg.warmup_noise, (num_envs, action_dim)).astype(np.float32)
        else:
            residual = agent.act(state, agent_obs, base_action, act_key, it, noise=None if noise is None else noise())
            residual = residual * progressive_mask(rng, num_envs, env_steps, cfg.progressive_steps)
        proposal = compose_action(base_action, residual)
        human, taken = supervisor(obs, proposal) if supervisor is not None else (no_human, no_intervention)
        action = np.where(taken[:, None], human, proposal).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = envs.step(action)
        replay.add({**replay_obs(agent_obs), "base_action": base_action, "residual_action": residual,
                    "action": action, "policy_action": proposal, "human_action": human,
                    "reward": reward.astype(np.float32), "terminated": terminated, "truncated": truncated,
                    "intervention": taken})
        n_taken = int(taken.sum())
        window_steps, window_taken = window_steps + num_envs, window_taken + n_taken
        takeover_steps += n_taken
        done = terminated | truncated
        reset_base(base, done)
        if supervisor is not None:
            supervisor.reset(done)
        if noise is not None:
            noise.reset(done)
        scaler.update(reward, done)
        obs, base_action = next_obs, base_actions(base, next_obs, num_envs, action_dim)

        # learn: `update_ratio` jitted calls per env step (each: utd critic updates + actor), critic-only warm-up first
        env_steps = (it + 1) * num_envs
        reward_scale = scaler.scale if cfg.reward_scaling else 1.0
        metrics = None
        if env_steps >= cfg.warmup_steps and len(replay) >= cfg.batch_size:
            if not critic_warm:
                for _ in range(math.ceil(cfg.critic_warmup_updates / cfg.utd)):
                    state, _ = agent.update(state, replay.sample(cfg.utd * cfg.batch_size), reward_scale,
                                            update_actor=False)
                critic_warm = True
            due = math.floor(env_steps * cfg.update_ratio) - math.floor((env_steps - num_envs) * cfg.update_ratio)
            for _ in range(due):
                update_actor = update_calls % cfg.actor_every == 0
                state, metrics = agent.update(state, replay.sample(cfg.utd * cfg.batch_size), reward_scale,
                                              update_actor)
                update_calls += 1

        if metrics is not None and env_steps % loop.log_every < num_envs:
            record("log", {"env_steps": env_steps, "reward_scale": reward_scale,
                           "takeover_rate": window_taken / max(window_steps, 1),
                           **{k: float(v) for k, v in metrics.items()}})
            window_steps = window_taken = 0
        if eval_envs is not None and loop.eval_every and env_steps % loop.eval_every < num_envs:
            run_eval(it + 1)
        if loop.checkpoint_dir and loop.checkpoint_every and env_steps % loop.checkpoint_every < num_envs:
            checkpoint(it + 1, loop.checkpoint_dir)

    if loop.checkpoint_dir:
        checkpoint(iterations, loop.checkpoint_dir)
    final_steps = iterations * num_envs
    if eval_envs is not None and not (result.evals and result.evals[-1]["env_steps"] == final_steps):
        run_eval(iterations)
    result.state, result.env_steps = state, final_steps
    result.takeover_share = takeover_steps / max((iterations - start_iter) * num_envs, 1)
    return result

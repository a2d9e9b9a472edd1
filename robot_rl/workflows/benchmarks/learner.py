"""`robot-rl bench learner`: gradient updates per second of our jitted learner vs Stable-Baselines3 SAC's `train()`.

Like for like: the same network widths (two hidden layers of `hidden_dim`), batch size, data dimensions, two critics,
learned temperature, Polyak target update every step, and one critic + one actor update per gradient step, each
sampling its batch from an in-memory replay of random transitions. Both sides are timed in the same process,
interleaved over several rounds (the median of each side is reported), because this machine is shared and noisy.

Extra keys: our bounded-norm (SimbaV2-style) network at the same width, and the UTD-4-in-one-call form the training
loop uses (four critic updates + one actor update per dispatch), counted in critic updates per second.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import gymnasium as gym
import jax
import numpy as np
from omegaconf import DictConfig

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.rl.agent import ResidualAgent
from robot_rl.rl.config import AgentConfig
from robot_rl.rl.replay import EpisodeReplay, replay_spec


@dataclass
class LearnerBenchConfig:
    obs_dim: int = 32
    action_dim: int = 7
    hidden_dim: int = 256
    batch_size: int = 256
    updates: int = 300  # gradient updates timed per side per round
    rounds: int = 3
    seed: int = 0
    threads: int = 0  # 0: each library's default; n: torch and XLA both limited to n threads
    device: str = "cpu"  # cpu, or gpu: JAX on CUDA against SB3 on CUDA (both sides on the same device)


def select_device(device: str) -> str:
    """Put both sides on `device` before JAX starts; returns the torch device name for SB3."""
    platforms = {"cpu": "cpu", "gpu": "cuda"}
    if device not in platforms:
        raise UserError(f"bench learner device={device!r}; use cpu or gpu")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise UserError("bench learner device=... must be set before JAX starts; run it as its own `robot-rl bench`")
    jax.config.update("jax_platforms", platforms[device])
    return platforms[device]


def limit_threads(threads: int) -> None:
    """Give both sides the same thread budget. On a shared, loaded machine, torch's default thread team degrades far
    more than a single thread does, which would flatter us; `threads=1` measures per-core efficiency fairly."""
    if threads <= 0:
        return
    import torch
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise UserError("bench learner threads=N must run before JAX starts; run it as its own `robot-rl bench`")
    torch.set_num_threads(threads)
    flags = f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'} intra_op_parallelism_threads={threads}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def random_replay(cfg: AgentConfig, obs_dim: int, action_dim: int, size: int, seed: int) -> EpisodeReplay:
    """Episodes of random content (the learner's replay path, sampling included): update speed does not depend on
    what the numbers mean."""
    replay = EpisodeReplay(ReplayCache(size, replay_spec(obs_dim, action_dim)), cfg, num_envs=1, seed=seed)
    rng = np.random.default_rng(seed)
    length = 100
    for _ in range(size // length):
        replay.add_episode({"obs": rng.normal(size=(length, obs_dim)).astype(np.float32),
                            "base_action": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
                            "action": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
                            "reward": rng.random(length).astype(np.float32),
                            "terminated": np.arange(length) == length - 1,
                            "intervention": np.zeros(length, bool)}, "policy")
    return replay


def sac_config(hidden_dim: int, batch_size: int, bounded: bool, utd: int) -> AgentConfig:
    """SB3-SAC-shaped recipe: from scratch, 2 critics with clipped double Q, two bare hidden layers of `hidden_dim`
    (no LayerNorm, as in SB3) unless `bounded`."""
    net = {"hidden_dim": hidden_dim, "num_blocks": 1, "expansion": 1, "layer_norm": False}
    return AgentConfig(name="bench", algo="sac", enabled=False, bounded=bounded, actor=dict(net),
                       critic={**net, "num_critics": 2, "num_min": 2}, batch_size=batch_size, utd=utd,
                       init_temperature=1.0, target_entropy_std=0.14)


class OurLearner:
    def __init__(self, cfg: AgentConfig, replay: EpisodeReplay, obs_dim: int, action_dim: int, seed: int) -> None:
        self.cfg, self.replay = cfg, replay
        self.agent = ResidualAgent(cfg, obs_dim, action_dim)
        self.state = self.agent.init(seed)
        self.run(2)  # compile outside the timed rounds

    def run(self, calls: int) -> None:
        rows = self.cfg.utd * self.cfg.batch_size
        for _ in range(calls):
            self.state, metrics = self.agent.update(self.state, self.replay.sample(rows))
        jax.block_until_ready((self.state, metrics))


class SB3Learner:
    def __init__(self, replay: EpisodeReplay, obs_dim: int, action_dim: int, hidden_dim: int, batch_size: int,
                 seed: int, device: str = "cpu") -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import Logger

        env = BoxEnv(obs_dim, action_dim)
        size = len(replay)
        self.batch_size = batch_size
        self.model = SAC("MlpPolicy", env, batch_size=batch_size, buffer_size=size + 1, learning_starts=0,
                         policy_kwargs={"net_arch": [hidden_dim, hidden_dim]}, device=device, seed=seed)
        self.model.set_logger(Logger(folder=None, output_formats=[]))  # configure() would leave a /tmp/SB3-* folder
        buffer, data = self.model.replay_buffer, replay.sample(size)  # the same transitions on both sides
        buffer.observations[:size] = data["obs"][:, None]
        buffer.next_observations[:size] = data["next_obs"][:, None]
        buffer.actions[:size] = data["action"][:, None]
        buffer.rewards[:size] = data["reward"][:, None]
        buffer.dones[:size] = (data["discount"] == 0)[:, None]
        buffer.pos = size
        self.run(2)

    def run(self, calls: int) -> None:
        self.model.train(gradient_steps=calls, batch_size=self.batch_size)
        if self.model.device.type == "cuda":
            import torch

            torch.cuda.synchronize()


class BoxEnv(gym.Env):
    """Only its spaces matter: SB3 builds its networks from them."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


def timed(learner, calls: int) -> float:
    start = time.perf_counter()
    learner.run(calls)
    return time.perf_counter() - start


def benchmark_learner(obs_dim: int = 32, action_dim: int = 7, hidden_dim: int = 256, batch_size: int = 256,
                      updates: int = 300, rounds: int = 3, seed: int = 0, threads: int = 0,
                      device: str = "cpu") -> dict:
    """Median updates/s per side over interleaved rounds; `speedup` = ours (plain MLP, like SB3) / SB3."""
    if min(obs_dim, action_dim, hidden_dim, batch_size, updates, rounds) < 1:
        raise UserError("bench learner: obs_dim, action_dim, hidden_dim, batch_size, updates, rounds must be >= 1")
    torch_device = select_device(device)
    limit_threads(threads)
    import torch
    replay = random_replay(sac_config(hidden_dim, batch_size, False, 1), obs_dim, action_dim,
                           max(10 * batch_size, 4096), seed)
    learners = {
        "sb3": SB3Learner(replay, obs_dim, action_dim, hidden_dim, batch_size, seed, torch_device),
        "ours": OurLearner(sac_config(hidden_dim, batch_size, False, 1), replay, obs_dim, action_dim, seed),
        "bounded": OurLearner(sac_config(hidden_dim, batch_size, True, 1), replay, obs_dim, action_dim, seed),
        "utd4": OurLearner(sac_config(hidden_dim, batch_size, False, 4), replay, obs_dim, action_dim, seed),
    }
    calls = {"sb3": updates, "ours": updates, "bounded": updates, "utd4": max(updates // 4, 1)}
    critic_updates = {"sb3": updates, "ours": updates, "bounded": updates, "utd4": 4 * calls["utd4"]}
    rates = {name: [] for name in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            rates[name].append(critic_updates[name] / timed(learner, calls[name]))
    median = {name: float(np.median(r)) for name, r in rates.items()}
    return {
        "updates_per_s": round(median["ours"], 1),
        "sb3_updates_per_s": round(median["sb3"], 1),
        "speedup": round(median["ours"] / median["sb3"], 2),
        "bounded_updates_per_s": round(median["bounded"], 1),
        "bounded_speedup": round(median["bounded"] / median["sb3"], 2),
        "utd4_critic_updates_per_s": round(median["utd4"], 1),
        "utd4_speedup": round(median["utd4"] / median["sb3"], 2),
        "hidden_dim": hidden_dim, "batch_size": batch_size, "obs_dim": obs_dim, "action_dim": action_dim,
        "rounds": rounds, "updates_per_round": updates, "torch_threads": torch.get_num_threads(), "device": device,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def run(cfg: DictConfig) -> dict:
    c = LearnerBenchConfig(**{k: cfg[k] for k in LearnerBenchConfig.__dataclass_fields__ if k in cfg})
    return benchmark_learner(c.obs_dim, c.action_dim, c.hidden_dim, c.batch_size, c.updates, c.rounds, c.seed,
                             c.threads, c.device)

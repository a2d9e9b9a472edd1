"""Minimal in-memory n-step replay for the training loop's online data (a stand-in: `robot_rl.data` owns the real
samplers and source mixing; anything with the same `add` / `sample` methods plugs into `robot_rl.rl.loop.train`).

Storage is time-major per vector env, so an n-step window is a walk along the time axis of one env; a window stops at
the first episode end and at the newest written step, and bootstraps from the step where it stopped.
"""

from __future__ import annotations

import numpy as np

STEP_KEYS = ("obs", "base_action", "action", "reward", "terminated", "truncated", "next_obs", "next_base_action")


class NStepReplay:
    def __init__(self, capacity: int, num_envs: int, obs_dim: int, action_dim: int, n_step: int, gamma: float,
                 seed: int = 0) -> None:
        self.rows = max(capacity // num_envs, n_step + 1)
        self.num_envs, self.n_step, self.gamma = num_envs, n_step, gamma
        shape = (self.rows, num_envs)
        self.data = {
            "obs": np.zeros(shape + (obs_dim,), np.float32),
            "next_obs": np.zeros(shape + (obs_dim,), np.float32),
            "base_action": np.zeros(shape + (action_dim,), np.float32),
            "next_base_action": np.zeros(shape + (action_dim,), np.float32),
            "action": np.zeros(shape + (action_dim,), np.float32),
            "reward": np.zeros(shape, np.float32),
            "terminated": np.zeros(shape, bool),
            "truncated": np.zeros(shape, bool),
        }
        self.ptr, self.size = 0, 0  # next row to write, rows written (at most `rows`)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size * self.num_envs

    def add(self, step: dict[str, np.ndarray]) -> None:
        """One vector-env step: each of STEP_KEYS with a leading num_envs axis; `next_obs` is the true next
        observation (the final one where an episode ended)."""
        for key in STEP_KEYS:
            self.data[key][self.ptr] = step[key]
        self.ptr = (self.ptr + 1) % self.rows
        self.size = min(self.size + 1, self.rows)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """`reward` = sum_k gamma^k r_{t+k} over the window, `discount` = gamma^m * (1 - terminated at its end)."""
        age = self.rng.integers(0, self.size, batch_size)  # 0 = oldest row still stored
        env = self.rng.integers(0, self.num_envs, batch_size)
        start = (self.ptr - self.size + age) % self.rows
        d = self.data
        reward = np.zeros(batch_size, np.float32)
        length = np.zeros(batch_size, np.int64)
        last = start.copy()
        alive = np.ones(batch_size, bool)
        for k in range(self.n_step):
            row = (start + k) % self.rows
            alive &= age + k < self.size
            reward += np.where(alive, self.gamma**k * d["reward"][row, env], 0.0).astype(np.float32)
            last = np.where(alive, row, last)
            length = np.where(alive, k + 1, length)
            alive &= ~(d["terminated"][row, env] | d["truncated"][row, env])
        discount = (self.gamma**length * ~d["terminated"][last, env]).astype(np.float32)
        return {
            "obs": d["obs"][start, env],
            "base_action": d["base_action"][start, env],
            "action": d["action"][start, env],
            "reward": reward,
            "discount": discount,
            "next_obs": d["next_obs"][last, env],
            "next_base_action": d["next_base_action"][last, env],
        }

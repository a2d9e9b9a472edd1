"""Return-based reward scaling (SimbaV2): divide rewards by `max(sqrt(var(G) + eps), max|G| / g_max)`, G the running
discounted return, so that values land inside the categorical critic's support whatever the task's reward scale.

Kept in NumPy beside the environment loop (it sees every env reward once); the update takes the scale as an argument.
"""

from __future__ import annotations

import numpy as np


class ReturnScaler:
    def __init__(self, num_envs: int, gamma: float, g_max: float = 5.0, eps: float = 1e-8) -> None:
        self.gamma, self.g_max, self.eps = gamma, g_max, eps
        self.returns = np.zeros(num_envs, np.float64)
        self.count, self.mean, self.m2, self.max_abs = 0, 0.0, 0.0, 0.0

    def update(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """One vector-env step: fold the rewards into each env's return, then reset the returns of finished envs."""
        self.returns = self.gamma * self.returns + np.asarray(rewards, np.float64)
        self._add(self.returns)
        self.returns[np.asarray(dones, bool)] = 0.0

    def update_episode(self, rewards: np.ndarray) -> None:
        """A whole logged episode (e.g. a demo), so demo rewards count before the first online success."""
        g, values = 0.0, []
        for r in np.asarray(rewards, np.float64):
            g = self.gamma * g + r
            values.append(g)
        self._add(np.asarray(values))

    def _add(self, values: np.ndarray) -> None:
        # Chan et al.'s parallel variance update: exact for any batch size.
        n = values.size
        if n == 0:
            return
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total
        self.max_abs = max(self.max_abs, float(np.abs(values).max()))

    @property
    def scale(self) -> float:
        if self.max_abs == 0.0:  # no non-zero return seen yet: every reward so far is 0, any scale is the same
            return 1.0
        var = self.m2 / self.count
        return float(max(np.sqrt(var + self.eps), self.max_abs / self.g_max))

    def state_dict(self) -> dict:
        return {"returns": self.returns.tolist(), "count": self.count, "mean": self.mean, "m2": self.m2,
                "max_abs": self.max_abs}

    def load_state_dict(self, state: dict) -> None:
        self.returns = np.asarray(state["returns"], np.float64)
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.max_abs = float(state["max_abs"])

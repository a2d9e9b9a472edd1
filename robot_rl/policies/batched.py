"""One chunk policy driving N environments at once: the base policy of vectorized residual training and evaluation.

Each env keeps its own observation history and executes its chunk open loop (`n_action_steps` actions, then a new
chunk), as `ChunkScheduler(mode="open_loop")` does for one env; the envs that need a new chunk at the same step share
one batched forward pass, so N envs cost about one inference per `n_action_steps` steps, not N.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from robot_rl.errors import UserError
from robot_rl.policies.policy import ChunkPolicy


class BatchedChunkPolicy:
    """`__call__(obs)` maps a batch of observations (dict of arrays with a leading num_envs axis) to one action per
    env; `reset(mask)` starts new episodes for the masked envs (their next call observes their first step)."""

    def __init__(self, policy: ChunkPolicy, num_envs: int, n_action_steps: int | None = None) -> None:
        self.policy, self.num_envs = policy, num_envs
        spec = policy.spec
        self.n_action_steps = spec.n_action_steps if n_action_steps is None else int(n_action_steps)
        if not 1 <= self.n_action_steps <= spec.horizon:
            raise UserError(f"n_action_steps={self.n_action_steps} must be in [1, horizon={spec.horizon}]")
        self.history: list[deque[dict[str, np.ndarray]]] = [deque(maxlen=spec.n_obs_steps) for _ in range(num_envs)]
        self.chunks = np.zeros((num_envs, spec.horizon, spec.action_dim), np.float32)
        self.chunk_index = np.full(num_envs, self.n_action_steps, np.int64)  # >= n_action_steps: a new chunk is due
        # its own sampling noise: wrappers sharing one policy (a run's training and evaluation bases) do not draw
        # from, or restart, each other's stream, so how often a run evaluates does not change its training
        self.generator = torch.Generator()
        self.generator.manual_seed(policy.seed)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """New episodes for the masked envs (default: all). Resetting all of them also restarts the sampling noise,
        so two evaluations of the same envs and seeds see the same base-policy noise (a paired comparison)."""
        if mask is None or np.all(mask):
            self.generator.manual_seed(self.policy.seed)
        for i in np.flatnonzero(np.ones(self.num_envs, bool) if mask is None else mask):
            self.history[i].clear()
            self.chunk_index[i] = self.n_action_steps

    def _histories(self, envs: np.ndarray) -> dict[str, np.ndarray]:
        """(len(envs), n_obs_steps, ...) per key; an env's oldest observation repeats until its history is full."""
        n_obs = self.policy.spec.n_obs_steps
        out = {}
        for key in self.policy.spec.obs_keys:
            rows = []
            for i in envs:
                steps = list(self.history[i])
                rows.append(np.stack([steps[0][key]] * (n_obs - len(steps)) + [s[key] for s in steps]))
            out[key] = np.stack(rows)
        return out

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        spec = self.policy.spec
        missing = [k for k in spec.obs_keys if k not in obs]
        if missing:
            raise UserError(f"observation lacks {missing[0]!r}, which the base policy reads (it reads "
                            f"{', '.join(spec.obs_keys)})")
        for i in range(self.num_envs):
            one = {k: np.array(obs[k][i], copy=True) for k in spec.obs_keys}
            if not self.history[i]:
                spec.check_obs(one)
            self.history[i].append(one)
        due = np.flatnonzero(self.chunk_index >= self.n_action_steps)
        if len(due):
            self.chunks[due] = self.policy.predict_batch(self._histories(due), self.generator)
            self.chunk_index[due] = 0
        actions = self.chunks[np.arange(self.num_envs), self.chunk_index]
        self.chunk_index += 1
        return actions

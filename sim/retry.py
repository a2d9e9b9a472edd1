"""Practice on failed starts: an env wrapper that restarts some episodes from the initial state of an earlier failure.

A mirror's initial state is a function of its reset seed, so the wrapper seeds every episode itself (from a stream
seeded by the first `reset(seed=...)`) and remembers the seeds of episodes that ran out of time without success.
Each later reset takes the oldest remembered failure with probability `probability` (it leaves the list; a second
failure puts it back), otherwise a fresh seed. A learner thus spends part of its steps on the starts it has not yet
mastered, the way an operator re-stages a scene the robot failed on; evaluations use plain envs on their own seeds.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium
import numpy as np

from sim.errors import SimError


class RetryFailedStarts(gymnasium.Wrapper):
    def __init__(self, env: gymnasium.Env, probability: float, capacity: int = 1000):
        if not 0.0 <= probability <= 1.0:
            raise SimError(f"retry_failed={probability}: give a probability in [0, 1] (0: fresh starts only)")
        super().__init__(env)
        self.probability = float(probability)
        self.failed: deque[int] = deque(maxlen=capacity)
        self.episode_seed: int | None = None
        self.retried = False  # whether the current episode restarts a failed one
        self._seeds = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        self.retried = bool(self.failed) and self._seeds.random() < self.probability
        self.episode_seed = self.failed.popleft() if self.retried else int(self._seeds.integers(2**31))
        return self.env.reset(seed=self.episode_seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if truncated and not terminated:
            self.failed.append(self.episode_seed)
        return obs, reward, terminated, truncated, info

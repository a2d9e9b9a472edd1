"""Residual composition: the executed action is the frozen base action plus a bounded correction, clipped to the
normalized action box. One definition, used by acting, by the critic targets and by the actor loss, so the learner
always trains on the action the robot executed. Also the exploration noise that acting (in the mirror and on the
robot) samples the residual with.
"""

from __future__ import annotations

import numpy as np


def compose_action(base, residual):
    """clip(base + residual, -1, 1) for NumPy or JAX arrays (whichever comes in goes out)."""
    return (base + residual).clip(-1.0, 1.0)


def residual_probability(step: int, progressive_steps: int) -> float:
    """Policy Decorator's progressive exploration: the chance of applying the residual grows linearly to 1."""
    if progressive_steps <= 0:
        return 1.0
    return min(step / progressive_steps, 1.0)


def progressive_mask(rng: np.random.Generator, num_envs: int, step: int, progressive_steps: int) -> np.ndarray:
    """Per-env 0/1 multipliers for the residual at this step."""
    p = residual_probability(step, progressive_steps)
    return (rng.random(num_envs) < p).astype(np.float32)[:, None]


class ExplorationNoise:
    """Per-env unit Gaussian noise for acting, AR(1)-correlated across each episode's steps: eps_t = rho * eps_{t-1}
    + sqrt(1 - rho^2) * N(0, 1) (`AgentConfig.noise_correlation`), so every step's marginal is N(0, 1) and the policy's
    action distribution at a step is unchanged; a new episode starts from a fresh draw."""

    def __init__(self, rng: np.random.Generator, num_envs: int, action_dim: int, rho: float):
        self.rng, self.rho = rng, rho
        self.eps = rng.standard_normal((num_envs, action_dim)).astype(np.float32)

    def __call__(self) -> np.ndarray:
        """This step's noise; the next call moves every env one step on (into a new array: what this returns is
        never changed afterwards, by the next step or by `reset`)."""
        out = self.eps
        fresh = self.rng.standard_normal(self.eps.shape).astype(np.float32)
        self.eps = (self.rho * self.eps + np.sqrt(1.0 - self.rho ** 2) * fresh).astype(np.float32)
        return out

    def reset(self, mask: np.ndarray) -> None:
        """Fresh noise for the envs whose episodes ended."""
        mask = np.asarray(mask, bool)
        self.eps[mask] = self.rng.standard_normal((int(mask.sum()), self.eps.shape[1])).astype(np.float32)

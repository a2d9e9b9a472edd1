"""Residual composition: the executed action is the frozen base action plus a bounded correction, clipped to the
normalized action box. One definition, used by acting, by the critic targets and by the actor loss, so the learner
always trains on the action the robot executed.
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

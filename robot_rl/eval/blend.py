"""The critic's estimate blended with each candidate's own on-policy returns, by empirical Bayes.

When candidates have run (their logged episodes carry their policy_id), their own episodes are unbiased samples of
their value, but few and noisy (a handful of sparse-reward episodes each); the chunked-TD critic's estimate is
steadier but biased (it carries values across policies). The blend takes the critic's estimate as the prior mean and
the mean own return as a noisy measurement of the value:

    value = td + w * (mean own return - td),    w = tau^2 / (tau^2 + sigma^2 / n)

with sigma^2 the variance of one episode's return (pooled over the candidates), n the candidate's usable episodes and
tau^2 how far the critic misses: the mean squared disagreement between returns and critic over the candidates that
ran, less the part the returns' own noise explains. A candidate that never ran keeps the critic's estimate (w = 0);
one with many episodes moves to its returns (w -> 1); the less the critic and the returns disagree, the more the
critic is trusted.

Only on-policy steps count: an episode's return runs until the first step the policy did not choose (a takeover, or
an executed action other than the recorded proposal, e.g. exploration noise), where the critic's value of the
policy's chunk at that state stands in for the rest. That keeps the return unbiased (for a stopping time tau,
E[sum_{t<tau} gamma^t r_t + gamma^tau V(s_tau)] = V(s_0)); an episode off-policy from its first step gives nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robot_rl.data import ReplayCache


def discounted_return(rewards: np.ndarray, gamma: float) -> float:
    """sum_t gamma^t r_t of one episode's rewards (from its first step)."""
    rewards = np.asarray(rewards, np.float64)
    return float(np.sum(rewards * gamma ** np.arange(len(rewards))))


def on_policy_steps(cache: ReplayCache, start: int, length: int, tolerance: float = 1e-6) -> np.ndarray:
    """(length,) bool: which steps of the cached episode at `start` ran the logged policy's own proposal. A step with
    an `intervention`, or whose `action` differs from its `policy_action` (where the cache has them; a NaN proposal
    counts as followed), is not."""
    steps = slice(start, start + length)
    followed = np.ones(length, bool)
    if "intervention" in cache.spec:
        followed &= ~cache.data["intervention"][steps].astype(bool)
    if "policy_action" in cache.spec:
        gap = np.abs(cache.data["action"][steps] - cache.data["policy_action"][steps]).reshape(length, -1)
        followed &= ~(gap > tolerance).any(axis=1)
    return followed


def on_policy_return(rewards: np.ndarray, followed: np.ndarray, gamma: float,
                     value_at: Callable[[int], float]) -> float | None:
    """The discounted return of one episode until its first step the policy did not choose, plus gamma^tau times
    `value_at(tau)` (the critic's value of the policy at that step) when that step is inside the episode; None when
    the policy did not choose even the first step."""
    tau = int(np.argmin(followed)) if not followed.all() else len(followed)
    if tau == 0:
        return None
    value = discounted_return(rewards[:tau], gamma)
    return value + gamma ** tau * value_at(tau) if tau < len(followed) else value


def blend(estimates: Sequence[float], returns: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Blended values and the weight each candidate's returns got (see the module docstring). `estimates`: the
    critic's value per candidate; `returns`: each candidate's on-policy episode returns (empty if it never ran).
    With no candidate of two or more episodes there is no spread to weigh the returns by: the estimates stand. When
    every candidate's returns are alike within it (a handful of failures each), the spread of all returns and
    estimates together stands in for sigma^2: identical returns never outweigh the critic outright, yet many of them
    still carry their weight."""
    estimates = np.asarray(estimates, np.float64)
    counts = np.array([len(r) for r in returns])
    means = np.array([np.mean(r) if len(r) else 0.0 for r in returns])
    spread = counts >= 2
    if not spread.any():
        return estimates, np.zeros(len(estimates))
    sigma2 = sum(float(np.sum((np.asarray(r) - np.mean(r)) ** 2)) for r, s in zip(returns, spread) if s)
    sigma2 /= float(np.sum(counts[spread] - 1))
    if sigma2 <= 1e-12:  # every candidate's few returns alike (e.g. all failures): no evidence they are exact, so
        # the spread of all returns and estimates together stands in (above zero whenever the critic disagrees)
        sigma2 = float(np.var(np.concatenate([*(np.asarray(r, np.float64) for r in returns), estimates]), ddof=1))
    if sigma2 <= 1e-12:  # every return and estimate the same: nothing to move
        return estimates, np.zeros(len(estimates))
    ran = counts > 0
    noise = sigma2 / np.maximum(counts, 1)
    tau2 = max(0.0, float(np.mean((means[ran] - estimates[ran]) ** 2) - np.mean(noise[ran])))
    weights = np.where(ran, tau2 / (tau2 + noise), 0.0)
    return estimates + weights * (means - estimates), weights

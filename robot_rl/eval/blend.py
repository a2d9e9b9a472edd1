"""The critic's estimate blended with the returns of each candidate's own logged episodes, by empirical Bayes.

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

An own episode's return counts until its first takeover, where the critic's value of the policy's chunk at that state
stands in for the rest: for a stopping time tau, E[sum_{t<tau} gamma^t r_t + gamma^tau V(s_tau)] = V(s_0). Chunks that
ran with small exploration noise on the proposals are corrected: with c = 0, H, 2H, ... the chunk starts and a_c the
actions that ran from c (until the chunk's end, the stop or the episode's end, the rest of the chunk filled with the
policy's own),

    V(s_0) = sum_t gamma^t r_t + sum_c gamma^c (Q(s_c, pi(s_c)) - Q(s_c, a_c)) + (TD errors of Q, zero mean),

so the return moves by the critic's advantage of the policy's chunk over what ran; chunks that ran as proposed need no
correction (exact when the logged policy executes its chunks open loop on the critic's H-step grid, as `bench ope`
does). A fitted critic barely tells nearby chunks apart, and larger noise makes the logged episodes another policy's:
on PushCube, noise 0.1 drops a 90% candidate to 13% and ranks the candidates' noisy successes at Spearman 0.41 against
their true ones (0.92 at noise 0.02). So a step whose action ran further than `tolerance` from the proposal (RMS over
the action's dimensions, normalized units) ends the return there, as a takeover does. Every stop is decided by what
happened up to its step, never by what came after. With the true values the estimate is then unbiased where the stops
do not depend on what the noise costs (a test checks a chain with known values); otherwise three things leave a bias
of second order in the noise, 1-3% in small models computed exactly: the policy's actions filling a chunk cut by a
takeover or by the episode's end, and the policy's fresh chunk at a stop inside a chunk (the logged policy would have
gone on with its old one). An episode stopped at its first step gives nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robot_rl.data import ReplayCache


BLEND_TOLERANCE = 0.05  # default RMS gap (normalized action units) past which a logged step ends an own return


def discounted_return(rewards: np.ndarray, gamma: float) -> float:
    """sum_t gamma^t r_t of one episode's rewards (from its first step)."""
    rewards = np.asarray(rewards, np.float64)
    return float(np.sum(rewards * gamma ** np.arange(len(rewards))))


def logged_steps(cache: ReplayCache, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (length,) arrays over the cached episode at `start`: each step's gap between the `action` that ran and the
    logged policy's `policy_action` (RMS over the action's dimensions; 0 where the cache has no proposals, or a NaN
    one), and whether it was an `intervention` (taken over)."""
    steps = slice(start, start + length)
    gap, taken_over = np.zeros(length), np.zeros(length, bool)
    if "intervention" in cache.spec:
        taken_over = cache.data["intervention"][steps].astype(bool)
    if "policy_action" in cache.spec:
        diff = (cache.data["action"][steps] - cache.data["policy_action"][steps]).reshape(length, -1)
        gap = np.nan_to_num(np.sqrt(np.mean(np.square(diff, dtype=np.float64), axis=1)), nan=0.0)
    return gap, taken_over


def off_proposal_share(cache: ReplayCache, episodes: Sequence[int], tolerance: float) -> float | None:
    """The share of the cached `episodes`' steps not taken over whose action ran further than `tolerance` from its
    proposal (RMS, as `logged_steps`): each such step ends a blend return, so above a few percent the candidate's own
    episodes give the blend little. None without such steps, or when the cache records no proposals."""
    if "policy_action" not in cache.spec:
        return None
    starts = cache.episode_starts()
    off = []
    for i in episodes:
        start = int(starts[i])
        gap, taken_over = logged_steps(cache, start, int(cache.steps_left[start]))
        off.append(gap[~taken_over] > tolerance)
    off = np.concatenate(off) if off else np.zeros(0, bool)
    return float(np.mean(off)) if off.size else None


def own_return(rewards: np.ndarray, gap: np.ndarray, taken_over: np.ndarray, horizon: int, gamma: float,
               value_at: Callable[[int], float], logged_value_at: Callable[[int, int], float],
               tolerance: float = BLEND_TOLERANCE) -> float | None:
    """The policy's return estimated from one of its own episodes (see the module docstring). It stops at the first
    step taken over or further than `tolerance` off its proposal (`gap`, `taken_over` from `logged_steps`): the
    discounted return until then, plus gamma^tau `value_at(tau)` (the critic's value of the policy's chunk at step
    tau) where it stops inside the episode, plus gamma^c (`value_at(c)` - `logged_value_at(c, k)`) for each chunk
    start c before the stop whose k steps that ran (up to the stop) were off their proposals at all;
    `logged_value_at(c, k)` is the critic's value of those k actions, the policy's chunk at c filling the rest. None
    when it stops at step 0."""
    n = len(rewards)
    stopped = taken_over | (gap > tolerance)
    tau = int(np.argmax(stopped)) if stopped.any() else n
    value = 0.0
    for c in range(0, tau, horizon):
        ran = min(c + horizon, tau) - c
        if (gap[c:c + ran] > 1e-6).any():
            value += gamma ** c * (value_at(c) - logged_value_at(c, ran))
    if tau == 0:
        return None
    value += discounted_return(rewards[:tau], gamma)
    return value + gamma ** tau * value_at(tau) if tau < n else value


def blend(estimates: Sequence[float], returns: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Blended values and the weight each candidate's returns got (see the module docstring). `estimates`: the
    critic's value per candidate; `returns`: each candidate's own episode returns (empty if it never ran).
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

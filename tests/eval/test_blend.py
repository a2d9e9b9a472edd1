"""The empirical-Bayes blend of the critic's estimate with each candidate's own returns, by hand."""

import numpy as np
import pytest

from robot_rl.data import ReplayCache
from robot_rl.eval.blend import blend, logged_steps, off_proposal_share, own_return


def test_own_return_corrects_small_noise_and_stops_at_takeovers_and_large_noise():
    rewards = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    value_at = {0: 0.7, 2: 0.9, 3: 0.4, 4: 0.6}.__getitem__  # the critic's value of the policy's chunk at a step
    logged = {(0, 2): 0.5, (2, 2): 0.8, (2, 1): 0.85, (4, 1): 0.55}  # its value of the k actions that ran from c

    def run(gaps=(), taken_from=None, n=6, **kw):  # gaps: {step: RMS gap}; 0.01 is small noise, 0.1 large
        gap = np.zeros(n)
        for t, g in dict(gaps).items():
            gap[t] = g
        taken = np.arange(n) >= taken_from if taken_from is not None else np.zeros(n, bool)
        return own_return(rewards[:n], gap, taken, 2, 0.5, value_at, lambda c, k: logged[c, k], **kw)

    assert run() == pytest.approx(0.25 + 0.5 ** 5 * 0.5)  # as proposed throughout: the plain return, no critic
    # small noise in chunk 0, a takeover at step 4: corrected by 0.7 - 0.5, bootstrapped at 4 by 0.6
    assert run({0: 0.01}, taken_from=4) == pytest.approx(0.2 + 0.25 + 0.5 ** 4 * 0.6)
    # a takeover at step 3 inside a chunk that ran as proposed: bootstrapped at 3
    assert run(taken_from=3) == pytest.approx(0.25 + 0.125 * 0.4)
    # ... inside a noisy chunk: the one step that ran (k = 1) corrected, the reward at step 2 kept
    assert run({2: 0.01}, taken_from=3) == pytest.approx(0.25 * (0.9 - 0.85) + 0.25 + 0.125 * 0.4)
    # large noise at step 3 ends the return there, like a takeover
    assert run({0: 0.01, 2: 0.01, 3: 0.1}) == pytest.approx(run({0: 0.01, 2: 0.01}, taken_from=3))
    # noise in the last, partial chunk of an episode: corrected with the one action that ran, the rewards kept
    assert run({2: 0.01, 4: 0.01}, n=5) == pytest.approx(0.25 * (0.9 - 0.8) + 0.25 + 0.0625 * (0.6 - 0.55))
    assert run({0: 0.01}, tolerance=0.0) is None  # tolerance 0: any noise stops it, here at once
    assert run(taken_from=0) is None  # taken over at once: nothing


def test_own_return_is_unbiased_with_the_true_values():
    """With the exact values the stops must not bias the estimate, whatever decides them: takeovers, large noise,
    episodes ending inside a chunk. A chain where every action is worth the same (so every correction is 0): success
    with probability p at each step, reward 1 then, a time limit; V(t) by hand. Episodes stopped at step 0 are left
    out, which is fine since that is decided before any outcome."""
    rng = np.random.default_rng(0)
    p, gamma, limit, horizon = 0.1, 0.95, 20, 4
    values = np.zeros(limit + 1)
    for t in range(limit - 1, -1, -1):
        values[t] = p + (1 - p) * gamma * values[t + 1]
    estimates = []
    for _ in range(20_000):
        success = rng.random(limit) < p
        n = int(np.argmax(success)) + 1 if success.any() else limit
        rewards = np.zeros(n)
        rewards[-1] = float(success.any())
        gap = np.where(rng.random(n) < 0.5, 0.01, 0.0)  # half the steps a little off their proposal
        gap[rng.random(n) < 0.03] = 0.2  # a few far off: the return stops there
        taken = np.cumsum(rng.random(n) < 0.03) > 0  # takeovers
        estimate = own_return(rewards, gap, taken, horizon, gamma, values.__getitem__, lambda c, k: values[c])
        if estimate is not None:
            estimates.append(estimate)
    error = np.std(estimates) / np.sqrt(len(estimates))
    assert len(estimates) > 18_000 and abs(np.mean(estimates) - values[0]) < 3 * error


def test_logged_steps_read_takeovers_and_proposals():
    spec = {"obs/state": ((1,), np.float32), "action": ((2,), np.float32), "policy_action": ((2,), np.float32),
            "reward": ((), np.float32), "terminated": ((), bool), "intervention": ((), bool)}
    cache = ReplayCache(10, spec)
    action = np.zeros((4, 2), np.float32)
    proposal = action.copy()
    proposal[2] = [0.1, 0.3]  # exploration noise on step 2: RMS gap sqrt((0.01 + 0.09) / 2)
    proposal[3] = np.nan  # no proposal recorded: counts as followed
    cache.add_episode({"obs/state": np.zeros((4, 1)), "action": action, "policy_action": proposal,
                       "reward": np.zeros(4), "terminated": np.arange(4) == 3,
                       "intervention": np.array([0, 1, 0, 0], bool)}, "policy")
    gap, taken_over = logged_steps(cache, 0, 4)
    np.testing.assert_allclose(gap, [0.0, 0.0, np.sqrt(0.05), 0.0], atol=1e-7)
    np.testing.assert_array_equal(taken_over, [False, True, False, False])


def test_off_proposal_share_counts_the_steps_not_taken_over_beyond_the_tolerance():
    spec = {"obs/state": ((1,), np.float32), "action": ((1,), np.float32), "policy_action": ((1,), np.float32),
            "reward": ((), np.float32), "terminated": ((), bool), "intervention": ((), bool)}
    cache = ReplayCache(20, spec)
    for gaps, taken in (([0.1, 0.1, 0.2], [0, 0, 0]), ([0.0, 0.3, 0.3, 0.3], [0, 1, 1, 1])):
        n = len(gaps)
        cache.add_episode({"obs/state": np.zeros((n, 1)), "action": np.array(gaps)[:, None],
                           "policy_action": np.zeros((n, 1)), "reward": np.zeros(n),
                           "terminated": np.arange(n) == n - 1, "intervention": np.array(taken, bool)}, "policy")
    assert off_proposal_share(cache, [0, 1], 0.15) == pytest.approx(0.25)  # 0.2 of 0.1, 0.1, 0.2, 0.0 (not 0.3s)
    assert off_proposal_share(cache, [1], 0.15) == 0.0 and off_proposal_share(cache, [], 0.15) is None
    del spec["policy_action"]
    assert off_proposal_share(ReplayCache(20, spec), [], 0.15) is None  # no proposals recorded: unknown


def test_blend_by_hand():
    estimates = [0.2, 0.6, 0.4]
    returns = [[1.0, 1.0, 1.0, 0.0], [0.0, 0.0], []]  # the third candidate never ran
    # sigma^2 pooled: (3 * 0.0625 + 0.5625 + 0) / (3 + 1) = 0.1875; noise = sigma^2 / n = 0.046875, 0.09375
    # disagreement: 0.75 - 0.2 = 0.55, 0 - 0.6 = -0.6; tau^2 = (0.3025 + 0.36) / 2 - (0.046875 + 0.09375) / 2
    tau2 = 0.33125 - 0.0703125
    values, weights = blend(estimates, returns)
    np.testing.assert_allclose(weights, [tau2 / (tau2 + 0.046875), tau2 / (tau2 + 0.09375), 0.0])
    np.testing.assert_allclose(values, [0.2 + weights[0] * 0.55, 0.6 - weights[1] * 0.6, 0.4])
    assert values[0] == pytest.approx(0.666244, abs=1e-6) and values[1] == pytest.approx(0.158590, abs=1e-6)


def test_blend_edge_cases():
    # no candidate with two episodes: no spread to weigh returns by, the estimates stand
    values, weights = blend([0.3, 0.5], [[1.0], []])
    np.testing.assert_array_equal(values, [0.3, 0.5])
    np.testing.assert_array_equal(weights, [0.0, 0.0])
    # each candidate's returns alike (sigma^2 pooled 0): the spread of all returns and estimates stands in,
    # var([0, 0, 1, 1, 1, 0.5, 0.5, 0.5], ddof=1) = 1.21875 / 7 (mean 0.5625), so two returns do not outweigh the
    # critic outright; tau^2 = mean disagreement^2 0.25 - mean(sigma^2 / 2, sigma^2 / 2, sigma^2 / 1)
    values, weights = blend([0.5, 0.5, 0.5], [[0.0, 0.0], [1.0, 1.0], [1.0]])
    sigma2 = 1.21875 / 7
    tau2 = 0.25 - (sigma2 / 2 + sigma2 / 2 + sigma2) / 3
    np.testing.assert_allclose(weights, [tau2 / (tau2 + sigma2 / 2)] * 2 + [tau2 / (tau2 + sigma2)])
    assert weights.max() < 0.61
    # a candidate failing all of many episodes: its returns win even though they never vary
    values, weights = blend([0.8, 0.4], [[0.0] * 30, []])
    assert weights[0] > 0.99 and values[0] < 0.01 and (values[1], weights[1]) == (0.4, 0.0)
    # critic and returns agree within the returns' noise: the critic is trusted
    values, weights = blend([0.5, 0.5], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(weights, [0.0, 0.0])
    # many episodes: the returns decide
    rng = np.random.default_rng(0)
    many = [list(rng.random(2000) < p) for p in (0.9, 0.1)]
    values, weights = blend([0.1, 0.9], many)
    assert weights.min() > 0.99 and values[0] > values[1]

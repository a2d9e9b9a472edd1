"""The empirical-Bayes blend of the critic's estimate with each candidate's own returns, by hand."""

import numpy as np
import pytest

from robot_rl.data import ReplayCache
from robot_rl.eval.blend import blend, logged_steps, own_return


def test_own_return_corrects_small_noise_and_stops_at_takeovers_and_large_noise():
    rewards = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    value_at = {0: 0.7, 2: 0.9, 3: 0.4, 4: 0.6}.__getitem__  # the critic's value of the policy's chunk at a step
    logged_value_at = {0: 0.5, 2: 0.8}.__getitem__  # its value of the chunk that ran; any other lookup fails

    def gaps(**steps):  # mean squared gap per step: 2e-4 (RMS 0.014 over a chunk of two) is small, 0.01 large
        gap2 = np.zeros(6)
        for t, g in steps.items():
            gap2[int(t[1:])] = g
        return gap2

    def run(gap2, taken_from=None, n=6, **kw):
        taken = np.arange(n) >= taken_from if taken_from is not None else np.zeros(n, bool)
        return own_return(rewards[:n], gap2[:n], taken, 2, 0.5, value_at, logged_value_at, **kw)

    assert run(gaps()) == pytest.approx(0.25 + 0.5 ** 5 * 0.5)  # as proposed throughout: the plain return
    # small noise in chunk 0, a takeover at step 4: corrected by 0.7 - 0.5, bootstrapped at 4 by 0.6
    assert run(gaps(s0=2e-4), taken_from=4) == pytest.approx(0.2 + 0.25 + 0.5 ** 4 * 0.6)
    # a takeover at step 3 inside a chunk that ran as proposed: bootstrapped at 3, as the policy chose up to there
    assert run(gaps(), taken_from=3) == pytest.approx(0.25 + 0.125 * 0.4)
    # ... inside a noisy chunk: cut back to the chunk's start
    assert run(gaps(s2=2e-4), taken_from=3) == pytest.approx(0.25 * 0.9)
    # large noise in chunk 1 ends the return at its start, after chunk 0's correction
    assert run(gaps(s0=2e-4, s3=0.02)) == pytest.approx(0.2 + 0.25 * 0.9)
    # noise in the last, partial chunk of an episode: bootstrapped at its start
    assert run(gaps(s2=2e-4, s4=1e-6), n=5) == pytest.approx(0.25 * (0.9 - 0.8) + 0.25 + 0.5 ** 4 * 0.6)
    # tolerance 0: any noise ends the return, here at once
    assert run(gaps(s0=2e-4), tolerance=0.0) is None
    assert run(gaps(), taken_from=0) is None  # taken over at once: nothing


def test_logged_steps_read_takeovers_and_proposals():
    spec = {"obs/state": ((1,), np.float32), "action": ((2,), np.float32), "policy_action": ((2,), np.float32),
            "reward": ((), np.float32), "terminated": ((), bool), "intervention": ((), bool)}
    cache = ReplayCache(10, spec)
    action = np.zeros((4, 2), np.float32)
    proposal = action.copy()
    proposal[2] = [0.1, 0.3]  # exploration noise on step 2: mean squared gap (0.01 + 0.09) / 2
    proposal[3] = np.nan  # no proposal recorded: counts as followed
    cache.add_episode({"obs/state": np.zeros((4, 1)), "action": action, "policy_action": proposal,
                       "reward": np.zeros(4), "terminated": np.arange(4) == 3,
                       "intervention": np.array([0, 1, 0, 0], bool)}, "policy")
    gap2, taken_over = logged_steps(cache, 0, 4)
    np.testing.assert_allclose(gap2, [0.0, 0.0, 0.05, 0.0], atol=1e-7)
    np.testing.assert_array_equal(taken_over, [False, True, False, False])


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

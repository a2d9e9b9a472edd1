"""The empirical-Bayes blend of the critic's estimate with each candidate's own on-policy returns, by hand."""

import numpy as np
import pytest

from robot_rl.data import ReplayCache
from robot_rl.eval.blend import blend, on_policy_return, on_policy_steps


def test_on_policy_return_stops_where_the_policy_stopped_choosing():
    rewards = np.array([0.0, 0.0, 1.0, 0.0])
    value_at = {2: 0.8}.__getitem__  # the critic's value of the policy at the step it lost control
    assert on_policy_return(rewards, np.array([1, 1, 0, 0], bool), 0.5, value_at) == pytest.approx(0.25 * 0.8)
    assert on_policy_return(rewards, np.ones(4, bool), 0.5, value_at) == pytest.approx(0.25)  # no bootstrap
    assert on_policy_return(rewards, np.array([0, 1, 1, 1], bool), 0.5, value_at) is None


def test_on_policy_steps_read_takeovers_and_proposals():
    spec = {"obs/state": ((1,), np.float32), "action": ((2,), np.float32), "policy_action": ((2,), np.float32),
            "reward": ((), np.float32), "terminated": ((), bool), "intervention": ((), bool)}
    cache = ReplayCache(10, spec)
    action = np.zeros((4, 2), np.float32)
    proposal = action.copy()
    proposal[2] = 0.1  # exploration noise on step 2
    proposal[3] = np.nan  # no proposal recorded: counts as followed
    cache.add_episode({"obs/state": np.zeros((4, 1)), "action": action, "policy_action": proposal,
                       "reward": np.zeros(4), "terminated": np.arange(4) == 3,
                       "intervention": np.array([0, 1, 0, 0], bool)}, "policy")
    np.testing.assert_array_equal(on_policy_steps(cache, 0, 4), [True, False, False, True])


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

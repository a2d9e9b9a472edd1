"""Policy-selection metrics against hand-computed examples, SciPy, and the documented edge cases."""

import math

import numpy as np
import pytest
from scipy import stats

from robot_rl.errors import UserError
from robot_rl.eval import ops

TRUE = np.array([0.9, 0.5, 0.7, 0.1, 0.3])
EST = np.array([0.6, 0.8, 0.7, 0.2, 0.1])  # ranks: 1 (0.8), 2 (0.7), 0 (0.6), 3, 4


def test_top_k_and_tie_breaking():
    assert ops.top_k(TRUE, EST, 3).tolist() == [1, 2, 0]
    tied = np.array([0.5, 0.5, 0.5, 0.1, 0.1])
    # equal estimates: the worse true value ranks first (no credit for a lucky order)
    assert ops.top_k(TRUE, tied, 3).tolist() == [1, 2, 0]
    assert ops.top_k(TRUE, EST, 99).tolist() == [1, 2, 0, 3, 4]  # k > n: all candidates
    with pytest.raises(UserError, match="k must be >= 1"):
        ops.top_k(TRUE, EST, 0)


def test_rank_correlations_are_scipys():
    assert ops.spearman(TRUE, EST) == pytest.approx(stats.spearmanr(TRUE, EST).statistic)
    assert ops.kendall(TRUE, EST) == pytest.approx(stats.kendalltau(TRUE, EST).statistic)
    # by hand: rank differences d = (1,-2,0,0,1) over true ranks (1,3,2,5,4) vs est ranks (3,1,2,4,5)
    assert ops.spearman(TRUE, EST) == pytest.approx(1 - 6 * (4 + 4 + 0 + 1 + 1) / (5 * 24))
    assert ops.spearman(TRUE, TRUE * 2) == pytest.approx(1.0) and ops.kendall(TRUE, -TRUE) == pytest.approx(-1.0)
    assert math.isnan(ops.spearman(TRUE, np.ones(5)))  # constant estimates: undefined, as in SciPy


def test_regret_and_top_k_statistics_by_hand():
    # top-1 is candidate 1 (true 0.5): regret = (0.9 - 0.5) / (0.9 - 0.1) = 0.5
    assert ops.regret_at_k(TRUE, EST, 1) == pytest.approx(0.5)
    assert ops.regret_at_k(TRUE, EST, 3) == pytest.approx(0.0)  # candidate 0 (0.9) is in the top-3
    assert ops.regret_at_k(np.ones(5), EST, 1) == 0.0  # all equal: nothing to lose
    assert ops.best_at_k(TRUE, EST, 2) == pytest.approx(0.7)
    assert ops.worst_at_k(TRUE, EST, 3) == pytest.approx(0.5)
    assert ops.mean_at_k(TRUE, EST, 3) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert ops.std_at_k(TRUE, EST, 2) == pytest.approx(0.1)  # population std of (0.5, 0.7)


def test_sharpe_ratio_definition_and_zero_std():
    # SCOPE-RL: (best@k - J(pi_b)) / std@k; top-3 true values (0.5, 0.7, 0.9): best 0.9, population std sqrt(0.08/3)
    assert ops.sharpe_ratio_at_k(TRUE, EST, 0.4, 3) == pytest.approx((0.9 - 0.4) / math.sqrt(0.08 / 3))
    assert ops.sharpe_ratio_at_k(TRUE, EST, 0.4, 1) == math.inf  # k = 1: std 0, better than behaviour
    assert ops.sharpe_ratio_at_k(TRUE, EST, 0.6, 1) == -math.inf
    assert ops.sharpe_ratio_at_k(TRUE, EST, 0.5, 1) == 0.0


def test_nmse_and_scorecard():
    assert ops.nmse(TRUE, TRUE) == 0.0
    assert ops.nmse(TRUE, np.full(5, TRUE.mean())) == pytest.approx(1.0)
    assert ops.nmse(np.ones(3), np.array([1.0, 2.0, 3.0])) == pytest.approx(5 / 3)  # constant truth: plain MSE
    card = ops.score_estimator(TRUE, EST, behavior_value=0.4)
    assert card["regret_at_1"] == pytest.approx(0.5) and "sharpe_at_3" in card
    assert ops.top_k_curve(ops.regret_at_k, TRUE, EST) == pytest.approx({1: 0.5, 2: 0.25, 3: 0.0, 4: 0.0, 5: 0.0})


def test_bootstrap_interval_contains_the_point_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    true = rng.uniform(size=30)
    good, low, high = ops.bootstrap_ci(ops.spearman, true, true + rng.normal(0, 0.05, 30), n_boot=300)
    assert low <= good <= high and low > 0.8
    noisy, low2, high2 = ops.bootstrap_ci(ops.spearman, true, true + rng.normal(0, 1.0, 30), n_boot=300)
    assert high2 - low2 > high - low


@pytest.mark.parametrize("true, est, message", [
    ([1, 2], [1, 2, 3], "1-D arrays"),
    ([], [], "no candidates"),
    ([1, np.nan], [1, 2], "finite"),
])
def test_bad_inputs(true, est, message):
    with pytest.raises(UserError, match=message):
        ops.spearman(true, est)


def test_mmrv_hand_computed():
    true = np.array([0.1, 0.5, 0.9])
    assert ops.mmrv(true, np.array([1.0, 2.0, 3.0])) == 0.0
    # swapping the top two: candidates 1 and 2 each violate a gap of 0.4; candidate 0 none
    assert np.isclose(ops.mmrv(true, np.array([1.0, 3.0, 2.0])), (0.0 + 0.4 + 0.4) / 3)
    # fully reversed: 0 <-> 2 gap 0.8 for both ends, candidate 1's largest violated gap 0.4
    assert np.isclose(ops.mmrv(true, np.array([3.0, 2.0, 1.0])), (0.8 + 0.4 + 0.8) / 3)

"""`bench ope` reports each estimator's scores as means over draws of the logged data, with every draw's figure."""

import math

import pytest

from robot_rl.errors import UserError
from robot_rl.workflows.benchmarks.ope import bench_ope, summarize_draws


def test_scores_are_means_over_draws_and_each_draw_is_kept():
    draws = [{"chunked_td": {"spearman": 0.56, "regret_at_1": 0.2, "sharpe_at_3": 4.0, "nmse": 1.0},
              "fqe": {"spearman": 0.1, "regret_at_1": 0.9, "sharpe_at_3": 1.0}},
             {"chunked_td": {"spearman": 0.12, "regret_at_1": 0.9, "sharpe_at_3": math.inf},
              "fqe": {"spearman": -0.2, "regret_at_1": 0.5, "sharpe_at_3": 2.0}}]
    summary = summarize_draws(draws)
    assert summary["chunked_td"]["spearman"] == pytest.approx(0.34)
    assert summary["chunked_td"]["regret_at_1"] == pytest.approx(0.55)
    assert summary["chunked_td"]["sharpe_at_3"] == math.inf  # one draw with zero spread in its top 3
    assert summary["chunked_td"]["per_draw"]["spearman"] == [0.56, 0.12]
    assert "nmse" not in summary["chunked_td"]  # the last line carries the three metrics the issue names
    assert summary["fqe"]["spearman"] == pytest.approx(-0.05)
    assert summary["fqe"]["per_draw"]["regret_at_1"] == [0.9, 0.5]


def test_no_data_draw_is_a_clear_error():
    with pytest.raises(UserError, match="data_draws must be at least 1"):
        bench_ope([], data_draws=0)

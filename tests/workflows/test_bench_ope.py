"""`bench ope` reports each estimator's scores as means over draws of the logged data, with every draw's figure."""

import math

import numpy as np
import pytest

from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError
from robot_rl.workflows.benchmarks.ope import bench_ope, log_data, remove_stale_draws, summarize_draws
from robot_rl.workflows.collect import make_task_env


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


def test_a_run_with_fewer_draws_removes_the_extra_draw_folders(tmp_path):
    for name in ("logged", "draw_1", "draw_2", "draw_3", "draw_plots"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ranking.json").write_text("{}")
    (tmp_path / "draw_notes.txt").write_text("mine")
    remove_stale_draws(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draw_1", "draw_notes.txt", "draw_plots", "logged"]
    remove_stale_draws(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draw_notes.txt", "draw_plots", "logged"]
    remove_stale_draws(tmp_path / "missing", 1)  # a first run: nothing to remove


def test_no_data_draw_is_a_clear_error():
    with pytest.raises(UserError, match="data_draws must be at least 1"):
        bench_ope([], data_draws=0)


class StillActor:
    """A behaviour that holds still: what differs between logged episodes is then only where they start."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, obs) -> np.ndarray:
        return np.zeros(self.action_dim, np.float32)


def policy_starts(root) -> np.ndarray:
    with EpisodeStore.open(root, mode="r") as store:
        return np.stack([store.episode(e)["obs/state"][0] for e in range(store.num_episodes)
                         if store.episode_meta(e)["policy_id"] == "still"])


def test_each_data_draw_logs_other_initial_states(tmp_path):
    """A draw is a fresh sample of the logged data: with no exploration noise the episodes of a deterministic policy
    differ between logging seeds only by their initial states, and one seed reproduces its draw."""
    env = make_task_env("Reach", "nominal", None, None, None)
    dim = env.robot.action_dim
    env.close()
    draw = lambda name, seed: log_data(tmp_path / name, "Reach", [("still", StillActor(dim))], demos=1,  # noqa: E731
                                       demo_noise=0.0, demo_fail_prob=0.0, episodes=2, takeover_fraction=0.0,
                                       noise=0.0, drift_threshold=0.3, drift_patience=3, seed=seed, progress=False)
    first, again, other = (policy_starts(draw(name, seed)) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert first.shape[0] == 2
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)

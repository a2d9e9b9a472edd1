"""Simulated takeovers while training: the drift rule, RLIF's penalty, and how the loop records a takeover."""

import numpy as np
import pytest
from rl_helpers import biased_base, make_point_mass_envs, tiny_recipe

from robot_rl.data import ReplayCache
from robot_rl.data.replay import GROUPS
from robot_rl.errors import UserError
from robot_rl.rl.loop import LoopConfig, train
from robot_rl.rl.replay import EpisodeReplay, replay_spec, takeover_rewards
from robot_rl.rl.takeover import DriftTakeover, ExpertTakeover, TakeoverConfig


def test_drift_rule_takes_over_after_patience_and_hands_back_after_hold():
    rule = DriftTakeover(num_envs=2, threshold=0.1, patience=3, hold=2)
    expert = np.zeros((2, 1))
    # env 0 drifts from the start; env 1 drifts twice, recovers once, then drifts for good
    drift = [[0.2, 0.2], [0.2, 0.2], [0.2, 0.0], [0.2, 0.2], [0.2, 0.2], [0.2, 0.2], [0.2, 0.2], [0.2, 0.2]]
    who = np.array([rule(np.array(d)[:, None], expert) for d in drift])
    # env 0: policy, policy, takeover at the 3rd drifting step for hold = 2 steps, then 3 more drifting steps again
    np.testing.assert_array_equal(who[:, 0], [0, 0, 1, 1, 0, 0, 1, 1])
    # env 1: the recovery resets the count; the takeover starts at the 3rd drifting step in a row (step 6)
    np.testing.assert_array_equal(who[:, 1], [0, 0, 0, 0, 0, 1, 1, 0])
    rule.reset(np.array([True, False]))  # a new episode in env 0: the policy acts first again
    assert not rule(np.array([[0.2], [0.2]]), expert)[0]


def test_drift_rule_with_hold_zero_keeps_control_to_the_episode_end():
    rule = DriftTakeover(num_envs=1, threshold=0.1, patience=2, hold=0)
    drifts = [0.2, 0.2, 0.0, 0.0, 0.0]
    who = [bool(rule(np.array([[d]]), np.zeros((1, 1)))[0]) for d in drifts]
    assert who == [False, True, True, True, True]  # the expert keeps control though the proposals came back
    rule.reset(np.array([True]))
    assert not rule(np.array([[0.0]]), np.zeros((1, 1)))[0]


@pytest.mark.parametrize("values", [{"threshold": -0.1}, {"patience": 0}, {"hold": -1}])
def test_takeover_config_rejects_bad_values(values):
    with pytest.raises(UserError, match="takeover"):
        TakeoverConfig(**values)


def test_takeover_penalty_marks_the_step_before_each_takeover():
    steps = {"reward": np.array([0, 0, 0, 0, 0, 0, 1], np.float32),
             "intervention": np.array([1, 0, 0, 1, 1, 0, 1], bool)}
    # takeovers start at steps 3 and 6 (the one at step 0 has no policy step before it)
    np.testing.assert_allclose(takeover_rewards(steps, 0.5), [0, 0, -0.5, 0, 0, -0.5, 1])
    assert steps["reward"][2] == 0  # the episode's own rewards are not changed
    np.testing.assert_allclose(takeover_rewards({"reward": steps["reward"]}, 0.5), steps["reward"])


class PointMassExpert:
    """The unbiased controller the biased base should have been; `reset` is a no-op (it has no state)."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(3.0 * (obs[:, 1] - obs[:, 0]), -1, 1)[:, None].astype(np.float32)

    def reset(self, mask: np.ndarray) -> None:
        pass


def test_loop_executes_and_records_takeovers_as_interventions():
    num_envs, penalty = 4, 0.5
    recipe = tiny_recipe(takeover_penalty=penalty)
    episodes: list[dict] = []
    cache = ReplayCache(10_000, replay_spec(2, 1))
    replay = EpisodeReplay(cache, recipe, num_envs, seed=0, on_episode=lambda steps, env: episodes.append(steps))
    supervisor = ExpertTakeover(PointMassExpert(), num_envs, TakeoverConfig(enabled=True, threshold=0.1,
                                                                             patience=3, hold=4))
    loop = LoopConfig(total_steps=240, seed=0, log_every=40)  # all warm-up: no update, the rule alone decides
    train(make_point_mass_envs(num_envs), recipe, loop, base=biased_base, replay=replay,
                   supervisor=supervisor)

    taken_any = False
    for steps in episodes:
        taken = steps["intervention"]
        taken_any |= taken.any()
        expert = PointMassExpert()(steps["obs"])
        np.testing.assert_allclose(steps["action"][taken], expert[taken], atol=1e-6)  # the expert's action ran
        np.testing.assert_allclose(steps["human_action"][taken], expert[taken], atol=1e-6)
        assert np.isnan(steps["human_action"][~taken]).all()
        np.testing.assert_allclose(steps["action"][~taken], steps["policy_action"][~taken])
        # the proposal is kept where the expert acted: base + warm-up noise, not the expert's action
        np.testing.assert_allclose(steps["policy_action"],
                                   np.clip(steps["base_action"] + steps["residual_action"], -1, 1), atol=1e-6)
        assert not taken[:2].any()  # every episode starts with the policy: patience 3 needs 3 drifting steps
    assert taken_any
    # intervened steps are demo-side data, and the cache holds the penalized rewards (the store keeps the task's)
    valid = np.flatnonzero(cache.valid)
    intervened = cache.data["intervention"][valid]
    assert (cache.group[valid][intervened] == GROUPS.index("demo")).all()
    assert (cache.group[valid][~intervened] == GROUPS.index("online")).all()
    stored = np.concatenate([takeover_rewards(steps, penalty) for steps in episodes])
    np.testing.assert_allclose(np.sort(cache.data["reward"][valid]), np.sort(stored))
    assert (cache.data["reward"][valid] < 0).any()

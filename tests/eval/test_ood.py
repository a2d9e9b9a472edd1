"""OOD scores: observations of a shifted mirror variant score higher than fresh in-distribution ones, under every
detector; the combination with simulated success does not care about the scale of either input."""

import numpy as np
import pytest

import sim
from robot_rl.errors import UserError
from robot_rl.eval.ood import (
    KNN,
    EnsembleDisagreement,
    Mahalanobis,
    OODConfig,
    combine,
    consensus,
    ood_scores,
    standardize,
)

SHIFTED = {"name": "nominal", "init_spread": 1.8, "obs_noise": 0.01, "friction": 0.6}


def expert_states(variant, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States, expert actions and episode ids of scripted PushCube episodes in a mirror variant."""
    env = sim.make_env("PushCube", variant=variant)
    expert = sim.make_expert("PushCube", seed=seed)
    states, actions, groups = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        expert.reset()
        done = False
        while not done:
            action = expert.act(obs)
            states.append(obs["state"])
            actions.append(action)
            groups.append(episode)
            obs, _, success, truncated, _ = env.step(action)
            done = success or truncated
    env.close()
    return np.array(states), np.array(actions), np.array(groups)


def policy_like_features(states: np.ndarray) -> np.ndarray:
    """A fixed random two-layer network standing in for a policy's feature layer (standardized by nominal stats)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1 / np.sqrt(states.shape[1]), (states.shape[1], 64))
    w2 = rng.normal(0, 1 / 8, (64, 32))
    return np.tanh(np.tanh(states @ w1) @ w2)


@pytest.fixture(scope="module")
def data():
    train, actions, groups = expert_states("nominal", 30, seed=0)
    fresh, _, _ = expert_states("nominal", 8, seed=500)
    shifted, _, _ = expert_states(SHIFTED, 8, seed=500)
    mean, std = train.mean(0), np.maximum(train.std(0), 1e-2)
    to_features = lambda s: policy_like_features((s - mean) / std)  # noqa: E731
    return to_features(train), actions, groups, to_features(fresh), to_features(shifted)


@pytest.mark.parametrize("detector", ["mahalanobis", "knn", "ensemble"])
def test_shifted_observations_score_higher(data, detector):
    train, actions, _, fresh, shifted = data
    model = {"mahalanobis": Mahalanobis().fit(train), "knn": KNN(5).fit(train),
             "ensemble": EnsembleDisagreement(members=5, width=128).fit(train, actions)}[detector]
    assert model.score(shifted).mean() > 1.2 * model.score(fresh).mean()


def test_ood_scores_are_ratios_to_held_out_simulation(data):
    train, actions, groups, fresh, shifted = data
    config = OODConfig(width=128)
    near = ood_scores(train, fresh, actions, groups, config)
    far = ood_scores(train, shifted, actions, groups, config)
    for method in ("mahalanobis", "knn", "ensemble"):
        assert 0.5 < near[method] < 2.0, (method, near)  # fresh nominal episodes look like held-out ones
        assert far[method] > 1.2 * near[method], (method, near, far)


def test_combination_is_invariant_to_the_scale_of_either_input():
    rng = np.random.default_rng(1)
    sim_success, ood = rng.uniform(0, 1, 12), rng.uniform(1, 3, 12)
    for how in ("rank", "zscore"):
        base = combine(sim_success, ood, 0.7, how)
        np.testing.assert_allclose(combine(100 * sim_success - 3, ood, 0.7, how), base, atol=1e-12)
        np.testing.assert_allclose(combine(sim_success, 0.01 * ood + 5, 0.7, how), base, atol=1e-12)
    # ranks: any monotone transform (e.g. a log-ratio instead of a ratio) leaves the combination unchanged
    np.testing.assert_allclose(combine(sim_success, np.log(ood), how="rank"), combine(sim_success, ood, how="rank"))
    # and the weight matters: OOD counts against a candidate
    assert np.argmax(combine([0.9, 0.8], [5.0, 1.0], weight=2.0)) == 1
    assert np.argmax(combine([0.9, 0.8], [5.0, 1.0], weight=0.0)) == 0


def test_standardize_and_consensus_edge_cases():
    np.testing.assert_array_equal(standardize([2.0, 2.0, 2.0], "zscore"), 0.0)
    np.testing.assert_allclose(standardize([3.0, 1.0, 2.0], "rank"), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(consensus({"a": np.array([1.0, 2.0]), "b": np.array([40.0, 10.0])}), [0.5, 0.5])
    with pytest.raises(UserError, match="finite"):
        standardize([1.0, np.nan])
    with pytest.raises(UserError, match="unknown standardization"):
        standardize([1.0, 2.0], "minmax")


def test_bad_input_is_a_one_line_error(data):
    train, actions, groups, _, _ = data
    with pytest.raises(UserError, match="features, the detector was fitted on"):
        Mahalanobis().fit(train).score(train[:, :5])
    with pytest.raises(UserError, match="at least 2 simulation episodes"):
        ood_scores(train, train, actions, np.zeros(len(train)))
    with pytest.raises(UserError, match="NaN or inf"):
        KNN().fit(np.full((4, 3), np.nan))
    with pytest.raises(UserError, match="candidates"):
        combine([0.1, 0.2], [1.0, 2.0, 3.0])

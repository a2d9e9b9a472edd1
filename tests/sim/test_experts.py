"""Scripted experts: reliable at default quality, worse on demand, smooth enough to imitate."""

import numpy as np
import pytest

import sim


def rollouts(task: str, episodes: int, seed: int = 100, **kwargs) -> tuple[float, list[np.ndarray]]:
    """Success rate of the expert and the action sequence of each episode."""
    env_kwargs = {k: kwargs.pop(k) for k in ("variant", "action_mode") if k in kwargs}
    env = sim.make_env(task, **env_kwargs)
    expert = sim.make_expert(task, seed=seed, action_mode=env_kwargs.get("action_mode"), **kwargs)
    successes, actions = 0, []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        expert.reset()
        done, episode = False, []
        while not done:
            episode.append(expert.act(obs))
            obs, _, terminated, truncated, _ = env.step(episode[-1])
            done = terminated or truncated
        successes += int(terminated)
        actions.append(np.array(episode))
        obs, _ = env.reset()
    return successes / episodes, actions


@pytest.mark.parametrize("task, episodes", [("Reach", 20), ("PushCube", 20), ("PickPlace", 15),
                                            ("BimanualHandover", 12)])
def test_expert_succeeds_at_default_quality(task, episodes):
    rate, actions = rollouts(task, episodes)
    assert rate >= 0.9
    steps = np.concatenate([np.abs(np.diff(a, axis=0)) for a in actions if len(a) > 1])
    assert np.quantile(steps, 0.9) < 0.25  # consecutive commands are close: smooth, learnable demonstrations


def test_expert_is_a_function_of_the_observation():
    env = sim.make_env("PushCube")
    obs, _ = env.reset(seed=0)
    a, b = sim.make_expert("PushCube", seed=1), sim.make_expert("PushCube", seed=2)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))


def test_fail_prob_one_fails_and_noise_degrades():
    assert rollouts("PushCube", 8, fail_prob=1.0)[0] <= 0.25
    assert rollouts("PickPlace", 8, noise=0.1)[0] < 0.8


def test_noise_is_gaussian_on_the_normalized_action():
    env = sim.make_env("PickPlace")
    obs, _ = env.reset(seed=0)
    clean = sim.make_expert("PickPlace").act(obs)
    noisy = np.array([sim.make_expert("PickPlace", noise=0.02, seed=s).act(obs) for s in range(200)])
    assert np.std(noisy - clean) == pytest.approx(0.02, rel=0.15)


@pytest.mark.parametrize("action_mode", ["absolute", "delta"])
def test_proposal_is_the_action_without_the_noise(action_mode: str):
    """DART labels: a noisy expert's `proposal` is what the same expert without noise does in the same state."""
    env = sim.make_env("PickPlace", action_mode=action_mode)
    obs, _ = env.reset(seed=0)
    clean, noisy = (sim.make_expert("PickPlace", noise=n, seed=1, action_mode=action_mode) for n in (0.0, 0.05))
    for _ in range(5):
        clean._target = None if noisy._target is None else noisy._target.copy()  # delta: the same executed target
        executed, expected = noisy.act(obs), clean.act(obs)
        np.testing.assert_allclose(noisy.proposal, expected, atol=1e-6)
        np.testing.assert_array_equal(clean.proposal, expected)
        assert np.abs(executed - noisy.proposal).max() > 1e-3
        obs, *_ = env.step(executed)


def test_expert_drives_a_delta_action_env():
    assert rollouts("PickPlace", 6, action_mode="delta")[0] >= 0.8


def test_expert_copes_with_a_real_like_variant():
    assert rollouts("PushCube", 8, variant="real_a")[0] >= 0.75

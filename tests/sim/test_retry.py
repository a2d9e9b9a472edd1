"""Practice on failed starts: failed episodes come back from their initial state, successes and fresh starts don't."""

import numpy as np
import pytest

import sim
from sim.retry import RetryFailedStarts


def first_states(envs, episodes: int, steps: int) -> list[np.ndarray]:
    """Initial states of the first env's episodes; zero actions never succeed, so each ends by the time limit."""
    obs, _ = envs.reset(seed=3)
    starts = [obs["state"][0].copy()]
    action = np.zeros(envs.action_space.shape, np.float32)
    while len(starts) < episodes:
        for _ in range(steps):
            obs, _, terminated, truncated, _ = envs.step(action)
        assert truncated[0] and not terminated[0]
        starts.append(obs["state"][0].copy())  # same-step reset: the next episode's first observation
    return starts


def test_every_failure_restarts_once_from_its_initial_state():
    envs = sim.make_vec_env("PushCube", 2, same_step_reset=True, retry_failed=1.0, max_steps=3)
    starts = first_states(envs, 4, 3)
    envs.close()
    # fails, is retried (fails again, so it is queued again), retried again...: one start throughout
    assert all(np.array_equal(starts[0], s) for s in starts[1:])


def test_without_failures_to_retry_starts_are_fresh():
    envs = sim.make_vec_env("PushCube", 2, same_step_reset=True, retry_failed=0.0, max_steps=3)
    starts = first_states(envs, 4, 3)
    envs.close()
    cubes = np.array([s[11:13] for s in starts])  # the cube's place on the table differs every episode
    assert len({tuple(np.round(c, 6)) for c in cubes}) == 4


def test_a_success_is_not_retried():
    env = RetryFailedStarts(sim.make_env("PushCube"), probability=1.0)
    expert = sim.make_expert("PushCube", action_mode=env.unwrapped.robot.action_mode)
    env.reset(seed=0)
    first, truncated = env.episode_seed, False
    while not truncated:  # standing still fails
        *_, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
    assert not terminated and list(env.failed) == [first]
    obs, _ = env.reset()
    assert env.retried and env.episode_seed == first and not env.failed
    expert.reset()
    terminated = truncated = False
    while not (terminated or truncated):  # the scripted expert solves the retried start
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
    assert terminated and not env.failed
    env.reset()
    assert not env.retried and env.episode_seed != first
    env.close()


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(sim.SimError, match="retry_failed=1.5: give a probability in \\[0, 1\\]"):
        sim.make_vec_env("PushCube", 1, retry_failed=1.5)

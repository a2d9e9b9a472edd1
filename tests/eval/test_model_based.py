"""The model-based estimate: a dynamics ensemble fitted on logged Reach steps tells a policy that reaches from one that
does not, counts a rollout's return at its first predicted success, and refuses data it cannot judge."""

import numpy as np
import pytest

import sim
from robot_rl.errors import UserError
from robot_rl.eval.model_based import DynamicsModel, ModelConfig, task_success
from robot_rl.workflows.collect import collect
from robot_rl.workflows.rank import load_cache


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    """40 noisy scripted Reach episodes, and a dynamics ensemble fitted on them."""
    root = tmp_path_factory.mktemp("model") / "reach"
    collect("Reach", root, episodes=40, noise=0.3, seed=0, progress=False)
    cache, _ = load_cache(root, "obs/state")
    model = DynamicsModel(ModelConfig(ensemble=2, hidden_dim=64, updates=3000, updates_per_call=500), cache)
    losses = model.fit()
    starts = cache.data["obs/state"][cache.episode_starts()]
    return model, losses, starts


def expert_chunks(states: np.ndarray) -> np.ndarray:
    """The scripted expert's next action at each state, as chunks of one step (it reads the state alone)."""
    expert = sim.make_expert("Reach")
    return np.stack([expert.act({"state": s}) for s in states[:, -1]])[:, None].astype(np.float32)


def test_the_model_tells_a_reaching_policy_from_a_still_one(reach):
    model, losses, starts = reach
    assert losses[-1] < 0.5 * losses[0]
    success = task_success("Reach", starts.shape[1])
    limit = sim.load_settings("Reach").max_steps
    reaching = model.value(lambda obs: expert_chunks(obs["state"]), starts, success, 0.99, limit)
    still = model.value(lambda obs: np.zeros((len(obs["state"]), 4, 4), np.float32), starts, success, 0.99, limit)
    assert reaching.value > 0.5 and still.value < 0.1
    assert reaching.pessimistic <= reaching.value and reaching.member_values.shape == (2,)


def test_a_rollout_counts_gamma_to_its_first_success_once(reach):
    model, _, starts = reach
    steps = iter(range(10_000))
    # success from the third predicted state on, whatever the states: return gamma^2 for every start and member
    after_two = lambda states: np.full(states.shape[:-1], next(steps) >= 2)  # noqa: E731
    estimate = model.value(lambda obs: np.zeros((len(obs["state"]), 8, 4), np.float32), starts, after_two, 0.9, 50)
    np.testing.assert_allclose(estimate.member_values, 0.81)
    assert estimate.spread == 0


def test_the_task_test_on_states_agrees_with_the_mirror():
    env = sim.make_env("PushCube")
    expert = sim.make_expert("PushCube", action_mode=env.robot.action_mode)
    success = task_success("PushCube", env.observation_space["state"].shape[0])
    obs, _ = env.reset(seed=1)
    flags, states, done = [], [], False
    while not done:
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
        flags.append(terminated)
        states.append(obs["state"])
        done = terminated or truncated
    env.close()
    assert flags[-1] and list(success(np.stack(states))) == flags


@pytest.mark.parametrize("task, dim, message", [
    ("Walker", 21, "'Walker' is none of"),
    ("PushCube", 9, "the logged states have 9 values, a PushCube mirror's have 21"),
])
def test_data_the_model_cannot_judge_is_a_one_line_error(task, dim, message):
    with pytest.raises(UserError, match=message) as error:
        task_success(task, dim)
    assert "\n" not in str(error.value) and "model.enabled=false" in str(error.value)

"""The learner's replay: which side of the symmetric sampler each episode's steps land on."""

import numpy as np
import pytest
from rl_helpers import tiny_recipe

from robot_rl.data import ReplayCache
from robot_rl.data.replay import GROUPS
from robot_rl.rl.replay import EpisodeReplay, apply_recipe, replay_spec

DEMO, ONLINE = GROUPS.index("demo"), GROUPS.index("online")


def vector_step(obs: list[float], reward: list[float], terminated: list[bool], truncated: list[bool],
                intervention: list[bool] | None = None) -> dict[str, np.ndarray]:
    n = len(obs)
    return {"obs": np.array(obs, np.float32)[:, None].repeat(2, 1), "action": np.zeros((n, 1), np.float32),
            "base_action": np.zeros((n, 1), np.float32), "reward": np.array(reward, np.float32),
            "terminated": np.array(terminated), "truncated": np.array(truncated),
            "intervention": np.array(intervention if intervention is not None else [False] * n)}


@pytest.mark.parametrize("successes_to_demo", [False, True])
def test_own_successes_join_the_demo_side_only_when_the_recipe_says_so(successes_to_demo):
    cache = ReplayCache(100, replay_spec(2, 1))
    replay = EpisodeReplay(cache, tiny_recipe(successes_to_demo=successes_to_demo), num_envs=3)
    # env 0 succeeds at its 3rd step (reward 1, terminated); env 1 times out with no reward; env 2 ends by
    # termination without reward (a failure that ends the episode) after a takeover at its 2nd step
    replay.add(vector_step([0, 10, 20], [0, 0, 0], [False] * 3, [False] * 3))
    replay.add(vector_step([1, 11, 21], [0, 0, 0], [False] * 3, [False] * 3, [False, False, True]))
    replay.add(vector_step([2, 12, 22], [1, 0, 0], [True, False, True], [False, True, False]))
    valid = np.flatnonzero(cache.valid)
    group = dict(zip(cache.data["obs"][valid, 0].astype(int), cache.group[valid]))
    assert [group[o] for o in (0, 1, 2)] == [DEMO if successes_to_demo else ONLINE] * 3
    assert [group[o] for o in (10, 11, 12)] == [ONLINE] * 3  # timed out: stays online
    assert [group[o] for o in (20, 21, 22)] == [ONLINE, DEMO, ONLINE]  # only the taken-over step is demo-side

    # the sampler draws the batch's demo share from them (besides the taken-over step)
    batch = replay.sample(256)
    demo_rows = set(batch["obs"][batch["demo"], 0].astype(int))
    assert demo_rows == ({0, 1, 2, 21} if successes_to_demo else {21})


def test_successes_go_to_the_demo_side_on_the_live_learners_path_too():
    """The live learner fills its cache from the store (`ReplayCache.add_episode` through `sync`), not through
    `EpisodeReplay`: the recipe's rule must hold there as well."""
    cache = ReplayCache(100, replay_spec(2, 1))
    apply_recipe(cache, tiny_recipe(successes_to_demo=True))
    episode = vector_step([5, 6], [0, 1], [False, True], [False, False])  # two steps of one episode
    cache.add_episode(episode, "policy")
    cache.add_episode({**episode, "reward": np.zeros(2, np.float32)}, "policy")
    assert cache.group[:2].tolist() == [DEMO, DEMO]
    assert cache.group[2:4].tolist() == [ONLINE, ONLINE]

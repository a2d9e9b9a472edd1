"""Samplers against hand-computed n-step returns and chunk windows at episode ends; source mixing; the ring."""

import numpy as np
import pytest
from store_checks import write_episodes

from robot_rl.data import ChunkSampler, EpisodeStore, NStepSampler, ReplayCache
from robot_rl.errors import UserError

SPEC = {"obs/state": ((1,), np.float32), "action": ((1,), np.float32), "reward": ((), np.float32),
        "terminated": ((), bool), "intervention": ((), bool)}


def episode(rewards, terminal, first_obs=0.0, intervention=None):
    n = len(rewards)
    obs = (first_obs + np.arange(n, dtype=np.float32))[:, None]
    return {"obs/state": obs, "action": obs * 10, "reward": np.asarray(rewards, np.float32),
            "terminated": (np.arange(n) == n - 1) & terminal,
            "intervention": np.zeros(n, bool) if intervention is None else np.asarray(intervention)}


def all_samples(sampler, size=4000):
    batch = sampler.sample(size)
    rows = {}
    for i in range(size):
        rows[float(batch["obs/state"][i, 0])] = {k: v[i] for k, v in batch.items()}
    return rows


def test_n_step_returns_match_hand_computation():
    cache = ReplayCache(64, SPEC)
    cache.add_episode(episode([1, 2, 3, 4, 5], terminal=True), "scripted")  # obs 0..4, ends by termination
    cache.add_episode(episode([1, 1, 1, 1], terminal=False, first_obs=10), "scripted")  # obs 10..13, time limit
    rows = all_samples(NStepSampler(cache, n=3, gamma=0.5, fractions={"demo": 1}, seed=0))
    g = 0.5
    # terminal episode: windows that reach the terminal step do not bootstrap
    assert rows[0]["reward"] == pytest.approx(1 + g * 2 + g**2 * 3) and rows[0]["discount"] == pytest.approx(g**3)
    assert rows[0]["next_obs/state"][0] == 3
    assert rows[2]["reward"] == pytest.approx(3 + g * 4 + g**2 * 5) and rows[2]["discount"] == 0
    assert rows[3]["reward"] == pytest.approx(4 + g * 5) and rows[3]["discount"] == 0
    assert rows[4]["reward"] == pytest.approx(5) and rows[4]["discount"] == 0
    # time-limited episode: windows shrink to keep a next observation; its last step is never a start
    assert rows[10]["discount"] == pytest.approx(g**3) and rows[10]["next_obs/state"][0] == 13
    assert rows[11]["reward"] == pytest.approx(1 + g) and rows[11]["discount"] == pytest.approx(g**2)
    assert rows[12]["reward"] == pytest.approx(1) and rows[12]["discount"] == pytest.approx(g)
    assert rows[12]["next_obs/state"][0] == 13
    assert 13.0 not in rows
    assert sorted(rows) == [0, 1, 2, 3, 4, 10, 11, 12]


def test_chunk_windows_never_cross_an_episode_end():
    cache = ReplayCache(64, SPEC)
    cache.add_episode(episode([0, 0, 0, 1], terminal=True), "policy")  # obs 0..3
    cache.add_episode(episode([0, 0, 0, 0, 0], terminal=False, first_obs=20), "policy")  # obs 20..24
    rows = all_samples(ChunkSampler(cache, horizon=3, gamma=0.9, fractions={"online": 1}, seed=0))
    # terminal episode: every start, padded with the last action and masked past the end
    assert rows[0]["action_chunk"][:, 0].tolist() == [0, 10, 20] and rows[0]["chunk_mask"].all()
    assert rows[0]["discount"] == pytest.approx(0.9**3) and rows[0]["next_obs/state"][0] == 3
    assert rows[1]["action_chunk"][:, 0].tolist() == [10, 20, 30] and rows[1]["discount"] == 0
    assert rows[1]["reward"] == pytest.approx(0.9**2)
    assert rows[2]["action_chunk"][:, 0].tolist() == [20, 30, 30]
    assert rows[2]["chunk_mask"].tolist() == [True, True, False] and rows[2]["reward"] == pytest.approx(0.9)
    assert rows[3]["chunk_mask"].tolist() == [True, False, False] and rows[3]["reward"] == pytest.approx(1)
    # time-limited episode: only windows that leave an observation after them (starts 20, 21)
    assert sorted(k for k in rows if k >= 20) == [20, 21]
    assert rows[21]["action_chunk"][:, 0].tolist() == [210, 220, 230]
    assert rows[21]["next_obs/state"][0] == 24 and rows[21]["discount"] == pytest.approx(0.9**3)


def test_an_episode_cut_at_the_time_limit_ends_there():
    cache = ReplayCache(64, SPEC)
    cache.add_episode(episode([0, 0, 0, 0, 1], terminal=False, first_obs=20), "policy")  # obs 20..24: 5 steps
    cache.add_episode(episode([0, 0, 0, 0], terminal=False, first_obs=40), "policy")  # obs 40..43: stopped early
    assert cache.step[cache.valid].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    rows = all_samples(ChunkSampler(cache, horizon=3, gamma=0.9, fractions={"online": 1}, seed=0, time_limit=5))
    # the 5-step episode ran the whole limit: its last windows end with it, returns past the limit count zero
    assert sorted(k for k in rows if 20 <= k < 40) == [20, 21, 22, 23, 24]
    assert rows[21]["discount"] == pytest.approx(0.9**3) and rows[21]["next_obs/state"][0] == 24
    assert rows[22]["discount"] == 0 and rows[22]["reward"] == pytest.approx(0.9**2)
    assert rows[22]["chunk_mask"].tolist() == [True, True, True]
    assert rows[24]["discount"] == 0 and rows[24]["reward"] == pytest.approx(1)
    assert rows[24]["chunk_mask"].tolist() == [True, False, False]
    # one stopped before the limit still leaves an observation after every window
    assert sorted(k for k in rows if k >= 40) == [40]
    with pytest.raises(UserError, match="time_limit"):
        ChunkSampler(cache, horizon=3, time_limit=0)


def test_mixing_by_group_and_interventions_on_the_demo_side():
    cache = ReplayCache(1000, SPEC)
    cache.add_episode(episode([0] * 50, terminal=False), "scripted")
    cache.add_episode(episode([0] * 50, terminal=False, first_obs=100,
                              intervention=np.arange(50) < 10), "policy")  # steps 100..109 were a takeover
    sampler = NStepSampler(cache, n=1, fractions={"demo": 0.25, "online": 0.75}, seed=1)
    batch = sampler.sample(400)
    obs = batch["obs/state"][:, 0]
    demo = (obs < 50) | ((obs >= 100) & (obs < 110))
    assert (batch["group"] == 0).sum() == 100 and (demo == (batch["group"] == 0)).all()
    assert ((obs >= 100) & (obs < 110)).any(), "intervened steps are sampled on the demo side"
    for part in np.split(batch["group"], 4):  # the rows come shuffled: every UTD minibatch slice mixes the groups
        assert 10 <= (part == 0).sum() <= 40
    only_online = NStepSampler(cache, n=1, fractions={"demo": 0.5, "online": 0.5}, seed=1)
    empty = ReplayCache(100, SPEC)
    empty.add_episode(episode([0] * 20, terminal=False), "policy")
    batch = NStepSampler(empty, n=1, seed=0).sample(64)  # no demo data: its share goes to the others
    assert (batch["group"] == 1).all() and len(batch["group"]) == 64
    assert only_online.counts(64) == [32, 32]
    with pytest.raises(UserError, match="unknown sampling group"):
        NStepSampler(cache, fractions={"expert": 1.0})
    with pytest.raises(UserError, match="no sampleable data"):
        NStepSampler(ReplayCache(10, SPEC), n=1).sample(4)


def test_ring_evicts_whole_episodes():
    cache = ReplayCache(10, SPEC)
    cache.add_episode(episode([0] * 4, terminal=True, first_obs=0), "policy")  # slots 0-3
    cache.add_episode(episode([0] * 4, terminal=True, first_obs=10), "policy")  # slots 4-7
    cache.add_episode(episode([0] * 4, terminal=True, first_obs=20), "policy")  # wraps: evicts the first
    assert cache.num_episodes == 2 and cache.size == 8
    cache.add_episode(episode([0] * 3, terminal=True, first_obs=30), "policy")  # slots 4-6: evicts the second
    assert cache.num_episodes == 2 and cache.size == 7
    obs = set(NStepSampler(cache, n=2, fractions={"online": 1}, seed=0).sample(500)["obs/state"][:, 0].tolist())
    assert obs == {20, 21, 22, 23, 30, 31, 32}
    with pytest.raises(UserError, match="does not fit"):
        cache.add_episode(episode([0] * 11, terminal=True), "policy")


def test_select_keeps_the_chosen_episodes_whole():
    cache = ReplayCache(20, SPEC)
    cache.add_episode(episode([0, 1], terminal=True, first_obs=0), "scripted")
    cache.add_episode(episode([0, 0, 1], terminal=False, first_obs=10, intervention=[False, True, True]), "policy")
    cache.add_episode(episode([1] * 4, terminal=True, first_obs=20), "policy")
    part = cache.select([2, 1])
    assert part.num_episodes == 2 and part.size == 7 and part.capacity == 8
    starts = part.episode_starts()
    assert part.data["obs/state"][starts, 0].tolist() == [20, 10]
    assert part.steps_left[:7].tolist() == [4, 3, 2, 1, 3, 2, 1] and part.step[:7].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert part.ends_terminal[:7].tolist() == [True] * 4 + [False] * 3
    assert part.group[4:7].tolist() == [1, 0, 0]  # the takeover steps stay on the demo side
    batch = ChunkSampler(part, horizon=2, gamma=1.0, fractions={"demo": 0.5, "online": 0.5}, seed=0).sample(400)
    assert set(batch["obs/state"][:, 0].tolist()) == {10, 20, 21, 22, 23}  # a cut episode's last window must fit
    assert cache.num_episodes == 3  # the source is untouched
    for bad in ([0, 0], [3], [-1]):
        with pytest.raises(UserError, match="distinct episode indices"):
            cache.select(bad)


def test_cache_syncs_the_committed_tail_of_a_store(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema)
    write_episodes(store, range(6))
    cache = ReplayCache.for_store(store, capacity=120)
    assert "obs/image_wrist" not in cache.spec  # images are left out by default
    assert cache.sync(store) >= 1
    lengths = store.meta["length"]
    # only the newest episodes that fit were read
    kept = [i for i in range(6) if lengths[i:].sum() <= 120]
    assert cache.num_episodes == len(kept) and cache.size == lengths[kept].sum()
    write_episodes(store, [6])
    assert cache.sync(store) == 1
    assert cache.sync(store) == 0

"""Shared checks of the store tests: write the deterministic episodes, compare them bit for bit."""

import numpy as np
from crash_writer import SCHEMA, make_episode


def write_episodes(store, indices) -> None:
    with store.writer() as writer:
        for index in indices:
            steps, fields = make_episode(index)
            for step in steps:
                writer.add_step(step)
            writer.end_episode(**fields)


def assert_episode_matches(store, i: int) -> None:
    """Committed episode i reads back bit-identical to what the deterministic generator wrote."""
    steps, fields = make_episode(i)
    got = store.episode(i)
    for key in SCHEMA:
        want = np.stack([np.asarray(s[key]) for s in steps]).astype(got[key].dtype)
        assert got[key].shape == want.shape, key
        assert got[key].tobytes() == want.tobytes(), f"episode {i} key {key} differs"
    meta = store.episode_meta(i)
    assert meta["length"] == len(steps)
    assert meta["source"] == fields["source"] and meta["success"] == fields["success"]
    assert meta["policy_id"] == fields["policy_id"] and meta["task"] == "Crash"

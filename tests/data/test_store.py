"""Episode store: round trips, metadata, readers, fsspec roots, and every bad input of the contract."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from crash_writer import CHUNK_BYTES, make_episode
from store_checks import assert_episode_matches, write_episodes

from robot_rl.data import EpisodeStore, make_step_schema, validate
from robot_rl.errors import UserError

HERE = Path(__file__).parent


def test_round_trip_is_bit_identical_across_chunk_boundaries(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema, chunk_bytes=CHUNK_BYTES)
    assert store.chunks["obs/image_wrist"] < 10  # episodes cross many chunk boundaries
    write_episodes(store, range(12))
    store.close()
    reader = EpisodeStore.open(tmp_path / "s")
    assert reader.num_episodes == 12
    assert reader.num_steps == sum(len(make_episode(i)[0]) for i in range(12))
    for i in range(12):
        assert_episode_matches(reader, i)
    assert validate(str(tmp_path / "s"))["episodes"] == 12
    # reopening for append and adding more keeps the old episodes intact
    store = EpisodeStore.open(tmp_path / "s", mode="a")
    write_episodes(store, range(12, 15))
    store.close()
    reader = EpisodeStore.open(tmp_path / "s")
    for i in range(15):
        assert_episode_matches(reader, i)


def test_episode_fields_defaults_and_layout(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema)
    steps, _ = make_episode(0)
    with store.writer() as writer:
        for step in steps:
            writer.add_step(step)
        writer.end_episode(success=True, source="teleop")
    meta = store.episode_meta(0)
    assert meta == {"source": "teleop", "policy_id": "", "success": True, "length": len(steps), "task": "",
                    "domain": "sim", "started_at": steps[0]["timestamp"]}
    store.close()
    import zarr

    group = zarr.open_group(str(tmp_path / "s"), mode="r")
    assert group.attrs["format"] == "robot_rl.episodes"
    assert group["meta/episode_ends"][:].tolist() == [len(steps)]  # a clean close trims capacity exactly
    assert group["data/obs/state"].shape == (len(steps), 6)
    assert group["data/obs/image_wrist"].chunks[1:] == (12, 12, 3)  # chunked on time only


def test_leaving_the_block_mid_episode_discards_it(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema, chunk_bytes=CHUNK_BYTES)
    write_episodes(store, [0])
    steps, _ = make_episode(1)
    with store.writer() as writer:
        for step in steps[:-1]:
            writer.add_step(step)
    assert store.num_episodes == 1
    write_episodes(store, [1])  # the next episode overwrites what the discarded one left on disk
    store.close()
    reader = EpisodeStore.open(tmp_path / "s")
    assert reader.num_episodes == 2
    assert_episode_matches(reader, 0)
    assert_episode_matches(reader, 1)


def test_memory_fsspec_root(schema):
    root = "memory://robot_rl_test_store"
    store = EpisodeStore.create(root, schema, chunk_bytes=CHUNK_BYTES)
    write_episodes(store, range(3))
    reader = EpisodeStore.open(root)
    assert reader.num_episodes == 3
    for i in range(3):
        assert_episode_matches(reader, i)
    with pytest.raises(UserError, match="one writer"):
        EpisodeStore.open(root, mode="a")
    store.close()
    assert validate(root)["episodes"] == 3


def test_make_step_schema_has_every_standard_key():
    schema = make_step_schema({"state": ((7,), "float32"), "image_wrist": ((96, 96, 3), "float32")}, 7)
    assert schema["obs/image_wrist"] == ((96, 96, 3), "uint8")  # images are stored as uint8
    for key in ("action", "policy_action", "base_action", "residual_action", "human_action", "intervention",
                "reward", "terminated", "truncated", "timestamp"):
        assert key in schema


# ------------------------------------------------------------------ bad input: one clear error, nothing written
def _good_step():
    return make_episode(0)[0][0]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(bogus=1.0), "unknown step key 'bogus'"),
    (lambda s: s.pop("reward"), "missing key 'reward'"),
    (lambda s: s.update({"action": np.zeros(4, np.float32)}), r"'action' has shape \(4,\), expected \(3,\)"),
    (lambda s: s.update({"obs/image_wrist": np.zeros((12, 12, 3), np.float32)}), "dtype float32, expected uint8"),
    (lambda s: s.update({"intervention": 0.5}), "expected bool"),
    (lambda s: s.update({"action": np.array([0, np.nan, 0], np.float32)}), "'action' contains NaN"),
    (lambda s: s.update({"obs/state": np.array([0, 0, np.inf, 0, 0, 0])}), "'obs/state' contains inf"),
    (lambda s: s.update({"human_action": np.array([np.nan, 1, 1], np.float32)}), "'human_action' contains NaN"),
    (lambda s: s.update({"obs/image_wrist": np.full((12, 12, 3), 300)}), "outside the uint8 range"),
])
def test_bad_step_is_rejected_and_the_store_stays_valid(tmp_path, schema, mutate, message):
    store = EpisodeStore.create(tmp_path / "s", schema)
    write_episodes(store, [0])
    steps, fields = make_episode(1)
    with store.writer() as writer:
        writer.add_step(steps[0])
        bad = dict(steps[1])
        mutate(bad)
        with pytest.raises(UserError, match=message):
            writer.add_step(bad)
        for step in steps[1:]:  # the episode goes on without the bad step
            writer.add_step(step)
        writer.end_episode(**fields)
    store.close()
    reader = EpisodeStore.open(tmp_path / "s")
    assert reader.num_episodes == 2
    assert_episode_matches(reader, 1)
    validate(str(tmp_path / "s"))


def test_bad_episode_fields(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema)
    with store.writer() as writer:
        writer.add_step(_good_step())
        with pytest.raises(UserError, match="source must be one of"):
            writer.end_episode(success=True, source="robot")
        with pytest.raises(UserError, match="unknown episode field 'colour'"):
            writer.end_episode(success=True, source="policy", colour="red")
        with pytest.raises(UserError, match="success must be a bool"):
            writer.end_episode(success="yes", source="policy")
        writer.end_episode(success=True, source="policy")
    assert store.num_episodes == 1


def test_write_to_read_only_store(tmp_path, schema):
    EpisodeStore.create(tmp_path / "s", schema).close()
    reader = EpisodeStore.open(tmp_path / "s")
    with pytest.raises(UserError, match="read-only"):
        reader.writer()


def test_second_writer_in_another_process_is_refused(tmp_path, schema):
    store = EpisodeStore.create(tmp_path / "s", schema)
    code = ("from robot_rl.data import EpisodeStore\n"
            f"EpisodeStore.open({str(tmp_path / 's')!r}, mode='a')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "one writer per store" in result.stderr
    store.close()  # released: now a second process may write
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_not_a_store_and_missing_root(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("hi")
    with pytest.raises(UserError, match="is not a robot_rl episode store"):
        EpisodeStore.open(tmp_path / "plain")
    with pytest.raises(UserError, match="does not exist"):
        EpisodeStore.open(tmp_path / "nothing")
    import zarr

    zarr.open_group(str(tmp_path / "other"), mode="w").attrs["format"] = "something else"
    with pytest.raises(UserError, match="is not a robot_rl episode store"):
        EpisodeStore.open(tmp_path / "other")


def test_schema_mismatch_on_reopen(tmp_path, schema):
    EpisodeStore.create(tmp_path / "s", schema).close()
    other = dict(schema, action=((4,), "float32"))
    with pytest.raises(UserError, match=r"schema mismatch .* key 'action'"):
        EpisodeStore.open(tmp_path / "s", mode="a", schema=other)
    with pytest.raises(UserError, match="schema mismatch"):
        EpisodeStore.create(tmp_path / "s", other, exist_ok=True)
    with pytest.raises(UserError, match="already exists"):
        EpisodeStore.create(tmp_path / "s", schema)
    assert EpisodeStore.create(tmp_path / "s", schema, exist_ok=True).num_episodes == 0


def test_bad_schema():
    with pytest.raises(UserError, match="bad shape or dtype"):
        EpisodeStore.create("memory://bad_schema", {"a": ((3,), "nonsense")})
    with pytest.raises(UserError, match="must be \\(shape, dtype\\)"):
        EpisodeStore.create("memory://bad_schema2", {"a": 3})

"""Checkpoints: a resumed learner continues the same run; a corrupt or half-written checkpoint never loads."""

import json

import jax
import numpy as np
import pytest
from rl_helpers import ACTION_DIM, OBS_DIM, random_batch, td3_recipe, tiny_recipe

from robot_rl.errors import UserError
from robot_rl.rl.agent import ResidualAgent
from robot_rl.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def run_updates(agent, state, rng, count):
    for _ in range(count):
        batch = random_batch(rng, agent.cfg.utd * agent.cfg.batch_size)
        state, _ = agent.update(state, batch, reward_scale=1.5)
    return state


def test_resume_continues_the_same_run(tmp_path):
    cfg = tiny_recipe()
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    k1, k2 = 4, 3

    straight = run_updates(agent, agent.init(7), np.random.default_rng(11), k1 + k2)

    rng = np.random.default_rng(11)  # the data stream is the same; only the learner restarts in between
    state = run_updates(agent, agent.init(7), rng, k1)
    save_checkpoint(tmp_path, state, {"agent": cfg.to_dict(), "update_calls": k1}, step=k1)
    del state
    fresh = ResidualAgent(tiny_recipe(), OBS_DIM, ACTION_DIM)
    restored, sidecar = load_checkpoint(tmp_path, fresh.init(123))  # template values are all overwritten
    assert sidecar["meta"]["update_calls"] == k1 and int(restored.step) == k1
    resumed = run_updates(fresh, restored, rng, k2)

    leaves_a, leaves_b = jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_killed_writer_leaves_previous_checkpoint_valid_and_corruption_is_detected(tmp_path):
    agent = ResidualAgent(tiny_recipe(), OBS_DIM, ACTION_DIM)
    state = agent.init(0)
    first = save_checkpoint(tmp_path, state, {"n": 1}, step=10)
    # a writer killed after writing the next weights but before the pointer moved: stray temp + unreferenced file
    (tmp_path / ".ckpt_0000000020.msgpack.abc.tmp").write_bytes(b"\x00" * 100)
    (tmp_path / "ckpt_0000000020.msgpack").write_bytes(first.read_bytes()[:50])
    assert latest_checkpoint(tmp_path) == first
    restored, sidecar = load_checkpoint(tmp_path, agent.init(1))
    assert sidecar["meta"] == {"n": 1}
    np.testing.assert_array_equal(np.asarray(restored.key), np.asarray(state.key))

    # flipped bytes: the sha256 sidecar catches it
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_checkpoint(tmp_path, agent.init(1))

    # a checkpoint of another network size does not load into this learner
    other = ResidualAgent(td3_recipe(), OBS_DIM, ACTION_DIM)  # scalar critic head instead of 101 bins
    save_checkpoint(tmp_path / "other", other.init(0), {}, step=1)
    with pytest.raises(UserError, match="network sizes"):
        load_checkpoint(tmp_path / "other", agent.init(0))


def test_checkpoint_files_are_msgpack_with_sha_sidecar(tmp_path):
    agent = ResidualAgent(tiny_recipe(), OBS_DIM, ACTION_DIM)
    for step in (1, 2, 3):
        path = save_checkpoint(tmp_path, agent.init(step), {"step": step}, step=step, keep=2)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format"] == "flax-msgpack" and len(sidecar["sha256"]) == 64 and sidecar["step"] == 3
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.msgpack")) == ["ckpt_0000000002.msgpack",
                                                                       "ckpt_0000000003.msgpack"]
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle stream

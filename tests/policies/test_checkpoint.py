"""Checkpoints: save/load round trip, atomic writes under kill -9, and every bad input as a one-line UserError."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_helpers import ACTION_DIM, IMAGE_SIZE, STATE_DIM, TASK, tiny_policy

from robot_rl.errors import UserError
from robot_rl.policies import ChunkPolicy, PolicyModel, PolicySpec, load_policy, save_policy
from robot_rl.policies.checkpoint import read_policy_header


def make_model(kind: str, images: bool = False, seed: int = 0) -> PolicyModel:
    keys = ("state", "image_front") if images else ("state",)
    shapes = {"state": (STATE_DIM,), "image_front": (IMAGE_SIZE, IMAGE_SIZE, 3)} if images else {"state": (STATE_DIM,)}
    config = tiny_policy(kind, obs_keys=keys)
    spec = PolicySpec(obs_keys=keys, action_dim=ACTION_DIM, horizon=config.horizon, n_obs_steps=config.n_obs_steps,
                      rate_hz=20.0, task=TASK, obs_shapes=shapes, n_action_steps=config.n_action_steps, kind=kind)
    torch.manual_seed(seed)
    model = PolicyModel(spec, config)
    rng = np.random.default_rng(seed)  # non-trivial normalization statistics, so they must round-trip too
    obs = {"state": rng.normal(size=(50, STATE_DIM))}
    model.normalizer.fit(obs, rng.uniform(-0.5, 0.7, size=(50, ACTION_DIM)))
    return model


def observation(t: int, images: bool) -> dict[str, np.ndarray]:
    obs = {"state": np.array([np.sin(t), np.cos(t), 0.1 * t, -0.2], np.float32)}
    if images:
        obs["image_front"] = np.random.default_rng(t).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return obs


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_policy(tmp_path / "policy.safetensors", make_model("diffusion"))


@pytest.mark.parametrize("kind,images", [("diffusion", False), ("diffusion", True), ("bc", True)])
def test_save_load_gives_identical_actions(tmp_path, kind, images):
    model = make_model(kind, images)
    path = save_policy(tmp_path / "policy.safetensors", model, info={"note": "round trip"})
    original, loaded = ChunkPolicy(model, seed=3), load_policy(path, seed=3)
    assert loaded.spec == original.spec and loaded.config == original.config
    for t in range(3):
        np.testing.assert_array_equal(original.act(observation(t, images)), loaded.act(observation(t, images)))
    assert read_policy_header(path)["info"] == {"note": "round trip"}


def test_diffusion_actions_depend_on_the_noise_seed_and_reset_replays_them(checkpoint):
    policy = load_policy(checkpoint, seed=0)
    first = policy.act(observation(0, False))
    policy.reset()
    np.testing.assert_array_equal(first, policy.act(observation(0, False)))
    policy.reset(seed=1)
    assert not np.array_equal(first, policy.act(observation(0, False)))
    assert first.shape == (policy.spec.horizon, ACTION_DIM) and np.abs(first).max() <= 1.0


def test_truncated_checkpoint_is_a_clear_error(checkpoint):
    data = checkpoint.read_bytes()
    for size in (0, 7, 200, len(data) // 2, len(data) - 1):
        checkpoint.write_bytes(data[:size])
        with pytest.raises(UserError, match="corrupt or truncated") as err:
            load_policy(checkpoint)
        assert "\n" not in str(err.value)


def test_flipped_weight_bytes_are_detected(checkpoint):
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: the header still parses
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_policy(checkpoint)


def test_files_that_are_not_policy_checkpoints(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_policy(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_policy(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(UserError, match="not a robot_rl.policy checkpoint"):
        load_policy(foreign)


def test_checkpoint_for_another_task_or_action_dimension(checkpoint):
    with pytest.raises(UserError, match=f"trained for task '{TASK}', not 'PushCube'"):
        load_policy(checkpoint, task="PushCube")
    with pytest.raises(UserError, match=f"action_dim {ACTION_DIM}, the environment needs 7"):
        load_policy(checkpoint, action_dim=7)
    with pytest.raises(UserError, match="expects observation 'state' of shape"):
        load_policy(checkpoint, obs_shapes={"state": (9,)})
    assert load_policy(checkpoint, task=TASK, action_dim=ACTION_DIM, obs_shapes={"state": (STATE_DIM,)})


@pytest.mark.parametrize("bad,message", [
    ({}, "missing key 'state'"),
    ({"state": np.zeros(STATE_DIM + 1, np.float32)}, r"'state' has shape \(5,\), the policy expects \(4,\)"),
    ({"state": np.full(STATE_DIM, np.nan, np.float32)}, "NaN"),
])
def test_bad_observations(checkpoint, bad, message):
    policy = load_policy(checkpoint)
    with pytest.raises(UserError, match=message):
        policy.act(bad)


def test_image_observation_with_the_wrong_shape(tmp_path):
    policy = ChunkPolicy(make_model("bc", images=True))
    obs = observation(0, True) | {"image_front": np.zeros((IMAGE_SIZE, IMAGE_SIZE + 2, 3), np.uint8)}
    with pytest.raises(UserError, match="'image_front' has shape"):
        policy.act(obs)


def kill_writer_repeatedly(path: Path, kills: int, write=save_policy) -> list[str]:
    """Fork a child that rewrites `path` in a loop with two alternating models and SIGKILL it at varied instants;
    after each kill, try to load the file. Returns the load errors (empty when every kill left a good file)."""
    models = [make_model("diffusion", seed=s) for s in (1, 2)]
    write(path, models[0])
    errors = []
    for k in range(kills):
        pid = os.fork()
        if pid == 0:  # child: write until killed
            try:
                for i in range(10**9):
                    write(path, models[i % 2])
            finally:
                os._exit(1)
        time.sleep(0.002 + 0.0037 * k)  # instants spread over many write cycles; nothing asserted on time
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            load_policy(path)
        except UserError as exc:
            errors.append(str(exc))
    return errors


def test_a_killed_writer_never_leaves_a_bad_checkpoint(tmp_path):
    """kill -9 during checkpoint writes: the file on disk always loads (the old or the new version)."""
    path = tmp_path / "policy.safetensors"
    assert kill_writer_repeatedly(path, kills=25) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".safetensors")] == ["policy.safetensors"]


def test_the_kill_test_catches_a_writer_that_is_not_atomic(tmp_path):
    """The same kills against a plain in-place write do leave bad files: the test above can fail."""

    def write_in_place(path: Path, model: PolicyModel) -> None:
        tmp = tmp_path / "staging.safetensors"
        save_policy(tmp, model)
        data = tmp.read_bytes()
        with open(path, "wb") as f:  # half, a pause (a slow disk), the rest: kills land mid-write even on a
            f.write(data[:len(data) // 2])  # loaded machine where the child is scheduled late
            f.flush()
            time.sleep(0.02)
            f.write(data[len(data) // 2:])

    assert kill_writer_repeatedly(tmp_path / "policy.safetensors", kills=25, write=write_in_place)

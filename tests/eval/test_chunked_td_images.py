"""The chunked-TD evaluator with camera images: the learner's encoder design lets it value what only a camera shows.

The task: one-step episodes whose state is always zero; the camera shows a bright or a dark scene, and the reward is 1
when the action's sign matches the scene (bright: push +1, dark: push -1). A state-only critic cannot tell the scenes
apart; the image critic must, and the policy that reads the camera must get the images too.
"""

import numpy as np
import pytest

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
from robot_rl.eval.steering import SteeredPolicy
from robot_rl.rl.config import EncoderConfig

SIZE, HORIZON = 12, 2
SPEC = {"obs/state": ((2,), np.float32), "obs/image_front": ((SIZE, SIZE, 3), np.uint8),
        "action": ((1,), np.float32), "reward": ((), np.float32), "terminated": ((), bool)}


def scene(bright: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, SIZE, SIZE, 3) uint8 images: bright or dark scenes with pixel noise."""
    level = np.where(np.asarray(bright)[:, None, None, None], 190, 60)
    return np.clip(level + rng.integers(-40, 41, (len(bright), SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def is_bright(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32).reshape(len(images), -1).mean(axis=1) > 125


@pytest.fixture(scope="module")
def cache():
    rng = np.random.default_rng(0)
    cache = ReplayCache(4096, SPEC)
    for _ in range(600):  # behaviour: a random push in a random scene
        bright = rng.random() < 0.5
        action = rng.choice([-1.0, 1.0])
        cache.add_episode({"obs/state": np.zeros((1, 2), np.float32), "obs/image_front": scene([bright], rng),
                           "action": np.array([[action]], np.float32),
                           "reward": np.array([float((action > 0) == bright)], np.float32),
                           "terminated": np.array([True])}, "policy")
    return cache


def config(**overrides) -> EvaluatorConfig:
    values = dict(horizon=HORIZON, gamma=0.9, num_critics=2, hidden_dim=32, updates=600, updates_per_call=300,
                  batch_size=64, lr=1e-3, tau=0.05, encoder=EncoderConfig(image_keys=["obs/image_front"],
                                                                          channels=[8, 8], feature_dim=8, shift=1))
    return EvaluatorConfig(**{**values, **overrides})


def push(sign_of) -> callable:
    """A policy pushing with sign `sign_of(obs)` (one per row) for the whole chunk."""
    return lambda obs: np.repeat(sign_of(obs)[:, None, None], HORIZON, axis=1).astype(np.float32)


def test_image_critic_values_what_only_the_camera_shows(cache):
    evaluator = ChunkedTDEvaluator(config(), cache)
    seeing = evaluator.fit(push(lambda obs: np.where(is_bright(obs["image_front"]), 1.0, -1.0)))
    contrary = evaluator.fit(push(lambda obs: np.where(is_bright(obs["image_front"]), -1.0, 1.0)))
    always = evaluator.fit(push(lambda obs: np.ones(len(obs["state"]))))
    assert seeing.value > 0.85 and contrary.value < 0.15, (seeing.value, contrary.value)
    bright = is_bright(cache.data["obs/image_front"][cache.episode_starts()])
    # the always-push policy is right in bright scenes only: its per-start values follow the camera
    assert always.initial_values[bright].mean() > 0.8 and always.initial_values[~bright].mean() < 0.2

    # a state-only critic on the same data sees one state and values the always-push policy at the data's average
    blind = ChunkedTDEvaluator(config(encoder=EncoderConfig()), cache).fit(push(lambda obs: np.ones(len(obs["state"]))))
    assert np.ptp(blind.initial_values) < 0.05 and 0.3 < blind.value < 0.7


def test_image_critic_steers_by_the_camera_and_needs_the_images(cache):
    evaluator = ChunkedTDEvaluator(config(), cache)
    evaluator.fit(push(lambda obs: np.where(is_bright(obs["image_front"]), 1.0, -1.0)))
    rng = np.random.default_rng(3)
    bright = np.array([True, False] * 8)
    obs = {"state": np.zeros((16, 2), np.float32), "image_front": scene(bright, rng)}
    sample = push(lambda obs: rng.choice([-1.0, 1.0], len(obs["state"])))
    chosen = SteeredPolicy(sample, evaluator, k=8)(obs)[:, 0, 0]
    assert np.all((chosen > 0) == bright)

    class TwoFrames:  # a sampler reading histories: steering scores the latest frame
        n_obs_steps = 2

        def __call__(self, obs):
            assert obs["image_front"].shape[1:] == (2, SIZE, SIZE, 3)
            return sample(obs)

    earlier = scene(~bright, rng)  # the older frame shows the opposite scene
    histories = {"state": np.stack([obs["state"]] * 2, axis=1),
                 "image_front": np.stack([earlier, obs["image_front"]], axis=1)}
    chosen = SteeredPolicy(TwoFrames(), evaluator, k=8)(histories)[:, 0, 0]
    assert np.all((chosen > 0) == bright)
    with pytest.raises(UserError, match="reads cameras"):
        evaluator.q_values(obs["state"], np.zeros((16, HORIZON, 1)))
    with pytest.raises(UserError, match="lack"):
        evaluator.q_values({"state": obs["state"]}, np.zeros((16, HORIZON, 1)))


def test_image_keys_missing_from_the_cache_and_unknown_encoder_settings():
    small = ReplayCache(16, {k: v for k, v in SPEC.items() if k != "obs/image_front"})
    small.add_episode({"obs/state": np.zeros((1, 2), np.float32), "action": np.zeros((1, 1), np.float32),
                       "reward": np.zeros(1, np.float32), "terminated": np.array([True])}, "policy")
    with pytest.raises(UserError, match="image_keys"):
        ChunkedTDEvaluator(config(), small)
    with pytest.raises(UserError, match="unknown evaluator.encoder setting"):
        EvaluatorConfig(encoder={"image_keys": [], "width": 3})


def test_image_updates_per_call_are_capped_by_memory(cache):
    evaluator = ChunkedTDEvaluator(config(updates_per_call=10**6, batch_size=256), cache)
    per_update = 2 * 256 * SIZE * SIZE * 3
    from robot_rl.eval.chunked_td import IMAGE_BATCH_BYTES
    assert evaluator.updates_per_call == IMAGE_BATCH_BYTES // per_update
    assert ChunkedTDEvaluator(config(updates_per_call=7), cache).updates_per_call == 7

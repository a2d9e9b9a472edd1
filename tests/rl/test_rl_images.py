"""Camera images in the residual learner: the critic's conv encoder reads the image, random shifts stay within the
pad and are off when acting, only the critic trains the encoder, and a critic learns rewards visible only in pixels.

Every test shares one agent (config and sizes), so the pixel update compiles once per session."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rl_helpers import IMAGE_KEY, hint_base, make_pixel_point_mass_envs, pixel_recipe

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.rl.agent import ResidualAgent
from robot_rl.rl.checkpoint import load_checkpoint, save_checkpoint
from robot_rl.rl.encoder import random_shift
from robot_rl.rl.loop import LoopConfig, flat_obs, train
from robot_rl.rl.replay import EpisodeReplay, replay_spec

SIZE, STATE_DIM, ACTION_DIM = 16, 2, 1
SHAPES = {IMAGE_KEY: (SIZE, SIZE, 3)}


def dot_images(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Black 16x16 images with one red pixel each."""
    images = np.zeros((len(rows), SIZE, SIZE, 3), np.uint8)
    images[np.arange(len(rows)), rows, cols, 0] = 255
    return images


def pixel_batch(rng: np.random.Generator, rows: int) -> dict:
    """Terminal transitions whose reward is 1 exactly when the dot is in the left half: the state is noise, so the
    reward is visible only in the image, and with discount 0 the TD target is the reward itself."""
    left = rng.random(rows) < 0.5
    cols = np.where(left, rng.integers(3, 6, rows), rng.integers(10, 13, rows))
    obs = {"state": rng.normal(size=(rows, STATE_DIM)).astype(np.float32),
           IMAGE_KEY: dot_images(rng.integers(3, 13, rows), cols)}
    return {"obs": obs, "next_obs": obs, "action": rng.uniform(-1, 1, (rows, ACTION_DIM)).astype(np.float32),
            "base_action": rng.uniform(-1, 1, (rows, ACTION_DIM)).astype(np.float32),
            "next_base_action": rng.uniform(-1, 1, (rows, ACTION_DIM)).astype(np.float32),
            "reward": left.astype(np.float32), "discount": np.zeros(rows, np.float32)}


def encoder_leaves(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)
            if "encoder" in jax.tree_util.keystr(p)}


@pytest.fixture(scope="module")
def agent():
    # a scalar critic and one critic update per call: the smallest graph that still has every image code path
    return ResidualAgent(pixel_recipe(utd=1, **{"critic.categorical": False}), STATE_DIM, ACTION_DIM, SHAPES)


@pytest.fixture(scope="module")
def features_and_residual(agent):
    """Unaugmented features and the deterministic residual computed from them, outside `act`."""
    return jax.jit(lambda s, o, b: (agent.encode(s.critic, o),
                                    agent.deterministic_residual(s.actor, agent.encode(s.critic, o), b)))


def test_encoder_features_follow_the_image(agent, features_and_residual):
    state = agent.init(0)
    obs = {"state": np.zeros((4, STATE_DIM), np.float32), IMAGE_KEY: dot_images(np.full(4, 8),
                                                                                 np.array([4, 4, 11, 11]))}
    features = np.asarray(features_and_residual(state, obs, np.zeros((4, ACTION_DIM), np.float32))[0])
    assert features.shape == (4, agent.feature_dim) == (4, STATE_DIM + 16)
    np.testing.assert_array_equal(features[0], features[1])  # same image, same features
    assert np.abs(features[0, STATE_DIM:] - features[2, STATE_DIM:]).max() > 1e-3  # another image, other features
    np.testing.assert_array_equal(features[:, :STATE_DIM], obs["state"])  # the state passes through untouched
    assert np.all(np.abs(features[:, STATE_DIM:]) <= 1.0)  # LayerNorm + tanh bound the image features


def test_random_shift_stays_within_the_pad_and_acting_is_unaugmented(agent, features_and_residual):
    pad = 2
    images = dot_images(np.full(400, 8), np.full(400, 7))
    shifted = np.asarray(random_shift(jnp.asarray(images), jax.random.key(0), pad))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    rows, cols = np.nonzero(shifted[..., 0] == 255)[1:]
    assert len(rows) == len(images)  # the dot is never cropped away: every image is a pure shift
    offsets = set(zip((rows - 8).tolist(), (cols - 7).tolist()))
    assert offsets == {(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}

    # acting reads the raw image: equal to the features of the unshifted image through the actor
    state = agent.init(1)
    mean_head = state.actor["mean"]["kernel"]
    state = state.replace(actor={**state.actor, "mean": {**state.actor["mean"], "kernel": mean_head + 0.5}})
    obs = {"state": np.zeros((4, STATE_DIM), np.float32), IMAGE_KEY: dot_images(np.full(4, 8), np.arange(4, 8))}
    base = np.zeros((4, ACTION_DIM), np.float32)
    acted = agent.act(state, obs, base, deterministic=True)
    by_hand = features_and_residual(state, obs, base)[1]
    np.testing.assert_array_equal(acted, np.asarray(by_hand))
    assert np.abs(acted).max() > 1e-3 and len(np.unique(acted)) == 4  # the residual depends on the image
    np.testing.assert_array_equal(agent.act(state, obs, base, deterministic=True), acted)


def test_critic_gradient_reaches_the_encoder_and_actor_gradient_does_not(agent):
    state = agent.init(2)
    mb = agent.prepare_batch(pixel_batch(np.random.default_rng(2), agent.cfg.batch_size))

    y = jnp.asarray(mb["reward"])  # discount 0: the TD target is the reward

    @jax.jit
    def gradients(state, mb):
        critic_grads = jax.grad(lambda p: agent.critic_loss(p, mb, y, None)[0])(state.critic)
        actor_grads = jax.grad(lambda a, c: agent.actor_loss(a, c, state.log_alpha, mb, jax.random.key(1))[0],
                               argnums=(0, 1))(state.actor, state.critic)
        return critic_grads, actor_grads

    critic_grads, (actor_grads, actor_grads_on_critic) = gradients(state, mb)
    from_critic, from_actor = encoder_leaves(critic_grads), encoder_leaves(actor_grads_on_critic)
    assert len(from_critic) >= 6 and from_critic.keys() == from_actor.keys()  # 2 convs, dense, LayerNorm
    assert all(np.abs(g).max() > 0 for g in from_critic.values())
    assert all(np.all(g == 0) for g in from_actor.values())
    # the actor's loss does reach the critic heads and its own parameters, so the zeros above are the stop-gradient
    heads = [g for p, g in jax.tree_util.tree_leaves_with_path(actor_grads_on_critic)
             if "ensemble" in jax.tree_util.keystr(p)]
    assert max(np.abs(np.asarray(g)).max() for g in heads) > 0
    assert max(np.abs(np.asarray(g)).max() for g in jax.tree_util.tree_leaves(actor_grads)) > 0


def test_critic_learns_a_reward_visible_only_in_pixels(agent, tmp_path):
    cfg = agent.cfg
    rng = np.random.default_rng(3)
    state = agent.init(3)
    q = jax.jit(lambda s, o, b, a: agent.q_values(s.critic, agent.encode(s.critic, o), b, a).mean(axis=0))
    probe = pixel_batch(np.random.default_rng(99), 256)  # held-out images, unshifted
    probe_obs = agent.as_obs(probe["obs"])
    losses, before = [], agent.init(3)
    for _ in range(150):
        state, metrics = agent.update(state, pixel_batch(rng, cfg.utd * cfg.batch_size), update_actor=False)
        losses.append(float(metrics["critic_loss"]))
    assert int(metrics["skipped"]) == 0
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    values = np.asarray(q(state, probe_obs, probe["base_action"], probe["action"]))
    rewarding = probe["reward"] == 1
    assert values[rewarding].mean() - values[~rewarding].mean() > 0.5  # the TD target gap is 1
    # the encoder did change, the bounded trunk is still projected, and the checkpoint carries the encoder
    trained, initial = encoder_leaves(state.critic), encoder_leaves(before.critic)
    assert any(not np.allclose(trained[k], initial[k]) for k in trained)
    save_checkpoint(tmp_path, state, {"image_shapes": {IMAGE_KEY: list(SHAPES[IMAGE_KEY])}}, step=1)
    restored, _ = load_checkpoint(tmp_path, agent.init(0))
    for k, leaf in encoder_leaves(restored.critic).items():
        np.testing.assert_array_equal(leaf, trained[k])
    np.testing.assert_array_equal(np.asarray(q(restored, probe_obs, probe["base_action"], probe["action"])), values)


def test_replay_carries_images_and_the_loop_passes_dict_observations(agent, tmp_path):
    # replay: the image of the step n later comes back as next_obs, uint8, next to the flat state
    cfg = agent.cfg
    replay = EpisodeReplay(ReplayCache(64, replay_spec(STATE_DIM, ACTION_DIM, image_shapes=SHAPES)), cfg, 1, seed=0)
    T = 10
    for t in range(T):
        image = dot_images(np.array([t % SIZE]), np.array([0]))
        replay.add({"obs": np.full((1, STATE_DIM), t, np.float32), IMAGE_KEY: image,
                    "base_action": np.zeros((1, ACTION_DIM), np.float32), "action": np.zeros((1, ACTION_DIM),
                                                                                              np.float32),
                    "reward": np.zeros(1, np.float32), "terminated": np.array([t == T - 1]),
                    "truncated": np.zeros(1, bool), "intervention": np.zeros(1, bool)})
    batch = replay.sample(32)
    assert batch["obs"][IMAGE_KEY].dtype == np.uint8 and batch["next_obs"][IMAGE_KEY].shape == (32, SIZE, SIZE, 3)
    t0 = batch["obs"]["state"][:, 0].astype(int)
    t1 = batch["next_obs"]["state"][:, 0].astype(int)
    assert np.all(batch["obs"][IMAGE_KEY][np.arange(32), t0, 0, 0] == 255)
    assert np.all(batch["next_obs"][IMAGE_KEY][np.arange(32), t1, 0, 0] == 255)
    assert np.any(t1 == t0 + cfg.n_step)
    with pytest.raises(UserError, match="camera key"):
        EpisodeReplay(ReplayCache(64, replay_spec(STATE_DIM, ACTION_DIM)), cfg, 1)

    # the loop: dict observations with the camera reach the replay, the acting agent (deterministic, in evaluation:
    # the function compiled above) and the checkpoint; warm-up only, so no further compile
    loop = LoopConfig(total_steps=40, seed=0, obs_key="state", eval_episodes=4, checkpoint_dir=str(tmp_path / "ckpt"))
    cache = ReplayCache(256, replay_spec(STATE_DIM, ACTION_DIM, image_shapes=SHAPES))
    result = train(make_pixel_point_mass_envs(4), cfg, loop, base=hint_base, eval_envs=make_pixel_point_mass_envs(4),
                   replay=EpisodeReplay(cache, cfg, 4))
    assert [e["env_steps"] for e in result.evals] == [0, 40]
    stored = cache.data[IMAGE_KEY][cache.valid]
    assert len(stored) > 0 and np.all((stored[..., 0] == 255).sum(axis=(1, 2)) == 1)  # one dot per stored image
    restored, sidecar = load_checkpoint(tmp_path / "ckpt", agent.init(0))
    assert sidecar["meta"]["image_shapes"] == {IMAGE_KEY: [SIZE, SIZE, 3]}
    np.testing.assert_array_equal(np.asarray(restored.critic["encoder"][IMAGE_KEY]["Conv_0"]["kernel"]),
                                  np.asarray(result.state.critic["encoder"][IMAGE_KEY]["Conv_0"]["kernel"]))
    with pytest.raises(UserError, match="image shape"):
        ResidualAgent(cfg, STATE_DIM, ACTION_DIM)
    with pytest.raises(UserError, match="flat arrays"):
        flat_obs(np.zeros((1, STATE_DIM), np.float32), None, (IMAGE_KEY,))

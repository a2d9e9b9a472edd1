"""Residual agent: starts exactly at the base, computes n-step targets as by hand, skips non-finite updates."""

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf
from rl_helpers import ACTION_DIM, OBS_DIM, random_batch, td3_recipe, tiny_recipe

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.rl.agent import ResidualAgent, as_key, new_key
from robot_rl.rl.config import load_recipe
from robot_rl.rl.replay import EpisodeReplay, replay_spec
from robot_rl.rl.residual import ExplorationNoise, compose_action


def as_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def agent():
    return ResidualAgent(tiny_recipe(), OBS_DIM, ACTION_DIM)


def test_zero_residual_reproduces_base_exactly(agent):
    state = agent.init(3)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, OBS_DIM)).astype(np.float32)
    base = rng.uniform(-1, 1, (64, ACTION_DIM)).astype(np.float32)
    base[:4] = [[1.0], [-1.0], [0.999999], [0.0]]  # edges of the action box too
    residual = agent.act(state, obs, base, deterministic=True)
    assert np.all(residual == 0.0)
    np.testing.assert_array_equal(compose_action(base, residual), base)
    # exploration noise is there when asked for, so the zero above is the zero-initialized head, not a dead actor
    assert np.abs(agent.act(state, obs, base, step=1)).max() > 0.01


def test_given_noise_replaces_the_drawn_noise(agent):
    """`act(noise=...)` is the policy's own sample with that unit noise: zero noise gives the mean action, the same
    noise the same residual whatever the key, and the residual is scale * tanh(mean + std * noise)."""
    state = agent.init(3)
    rng = np.random.default_rng(1)
    obs, base = rng.normal(size=(32, OBS_DIM)).astype(np.float32), np.zeros((32, ACTION_DIM), np.float32)
    noise = rng.standard_normal((32, ACTION_DIM)).astype(np.float32)
    np.testing.assert_allclose(agent.act(state, obs, base, step=1, noise=np.zeros_like(noise)),
                               agent.act(state, obs, base, deterministic=True), atol=1e-7)
    a = agent.act(state, obs, base, new_key(1), step=1, noise=noise)
    np.testing.assert_array_equal(a, agent.act(state, obs, base, new_key(2), step=7, noise=noise))
    mean, log_std = agent.policy(state.actor, agent.as_obs(obs), base)
    expected = agent.scale * np.tanh(np.asarray(mean) + np.exp(np.asarray(log_std)) * noise)
    np.testing.assert_allclose(a, expected, atol=1e-6)
    assert np.abs(a).max() > 0.01


def test_exploration_noise_keeps_unit_variance_and_the_asked_correlation():
    rho, steps = 0.9, 400
    noise = ExplorationNoise(np.random.default_rng(0), num_envs=500, action_dim=2, rho=rho)
    draws = np.stack([noise() for _ in range(steps)])  # (steps, envs, dims)
    assert abs(draws.std() - 1.0) < 0.02  # every step's marginal stays N(0, 1): the policy's own spread
    lag1 = np.mean(draws[1:] * draws[:-1]) / np.mean(draws ** 2)
    assert abs(lag1 - rho) < 0.02
    # a new episode starts afresh: envs reset between two steps lose the correlation, the others keep it
    before = noise()
    mask = np.arange(500) < 250
    noise.reset(mask)
    after = noise()
    assert abs(np.mean(before[mask] * after[mask])) < 0.1
    assert np.mean(before[~mask] * after[~mask]) > 0.7
    # and the independent case is what SAC draws: no correlation from step to step
    iid = ExplorationNoise(np.random.default_rng(1), num_envs=500, action_dim=2, rho=0.0)
    a, b = iid(), iid()
    assert abs(np.mean(a * b)) < 0.05


def test_noise_correlation_must_be_below_one():
    with pytest.raises(UserError, match="noise_correlation"):
        tiny_recipe(noise_correlation=1.0)


def test_n_step_targets_match_hand_computation():
    gamma, n = 0.9, 3
    cfg = td3_recipe()
    assert (cfg.gamma, cfg.n_step) == (gamma, n)
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    state = agent.init(0)
    # one env, 12 steps in three episodes: terminated at t=4, truncated (time limit) at t=9, terminated at t=11;
    # obs[0] is the time index
    T = 12
    rewards = np.array([0.5, 0, 1, 0, 2, 0.25, 0, 3, 0, 1, 0, 0.5], np.float32)
    terminated = np.zeros(T, bool)
    truncated = np.zeros(T, bool)
    terminated[[4, 11]], truncated[9] = True, True
    obs = np.stack([np.arange(T), np.sin(np.arange(T))], axis=1).astype(np.float32)
    base = np.cos(np.arange(T))[:, None].astype(np.float32) * 0.9
    replay = EpisodeReplay(ReplayCache(64, replay_spec(OBS_DIM, ACTION_DIM)), cfg, num_envs=1, seed=0)
    for t in range(T):
        replay.add({"obs": obs[t:t + 1], "base_action": base[t:t + 1], "action": base[t:t + 1],
                    "reward": rewards[t:t + 1], "terminated": terminated[t:t + 1], "truncated": truncated[t:t + 1],
                    "intervention": np.zeros(1, bool)})
    batch = replay.sample(cfg.batch_size)

    # the network parts: the target critic's Q at every step's obs and base action (the zero-initialized actor adds
    # a zero residual), and the agent's targets for the batch; one jitted call, because eager dispatch would compile
    # every primitive separately
    q_at, (y, _) = jax.jit(lambda st, b: (
        agent.critic_net.apply({"params": st.target_critic}, obs,
                               agent.critic_action(base, compose_action(base, 0.0 * base))),
        agent.critic_target(st, b, 1.0, as_key(st.key))))(state, agent.prepare_batch(batch))
    q_at = np.asarray(q_at).min(axis=0)  # min over the heads, per step

    # by hand: sum gamma^k r over m = min(n, steps left) steps; a time-limited episode has no observation after its
    # last step, so its windows stop one step earlier and that step starts none; bootstrap from obs[t + m] with
    # gamma^m, not at all when the window reaches a termination
    ends = {t: (4, True) for t in range(5)} | {t: (9, False) for t in range(5, 10)} | {10: (11, True), 11: (11, True)}
    expected = []
    for t in batch["obs"][:, 0].astype(int):
        end, terminal = ends[t]
        left = end - t + 1
        m = min(n, left if terminal else left - 1)
        ret = sum(gamma**k * rewards[t + k] for k in range(m))
        if terminal and m == left:
            expected.append(ret)
        else:
            np.testing.assert_array_equal(batch["next_obs"][len(expected)], obs[t + m])
            expected.append(ret + gamma**m * q_at[t + m])
    expected = np.asarray(expected)
    assert set(batch["obs"][:, 0].astype(int)) == set(range(T)) - {9}  # every sampleable start was checked

    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    # the update uses exactly these targets (and divides rewards by the reward scale)
    _, metrics = agent.update(state, batch, reward_scale=1.0)
    np.testing.assert_allclose(float(metrics["target_mean"]), expected.mean(), rtol=1e-5)
    _, metrics = agent.update(state, batch, reward_scale=4.0)
    scaled = expected - batch["reward"] + batch["reward"] / 4.0
    np.testing.assert_allclose(float(metrics["target_mean"]), scaled.mean(), rtol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_batch_is_skipped_and_weights_stay_finite(agent, bad):
    cfg = agent.cfg
    rng = np.random.default_rng(1)
    state = agent.init(0)
    state, _ = agent.update(state, random_batch(rng, cfg.utd * cfg.batch_size))
    before = as_numpy(state)

    batch = random_batch(rng, cfg.utd * cfg.batch_size)
    batch["obs"][5, 0] = bad  # in every minibatch: the first row of the first, and the reward of the last
    batch["reward"][-1] = bad
    state, metrics = agent.update(state, batch)
    assert int(metrics["skipped"]) == cfg.utd + 1  # every critic update and the actor update
    for name in ("actor", "critic", "target_critic", "log_alpha", "actor_opt", "critic_opt"):
        assert_trees_equal(getattr(state, name), getattr(before, name))

    # only the last minibatch bad: the first critic update goes through, the rest is skipped
    batch = random_batch(rng, cfg.utd * cfg.batch_size)
    batch["next_obs"][-1, 0] = bad
    state, metrics = agent.update(state, batch)
    assert int(metrics["skipped"]) == 2  # last critic minibatch + the actor update, which uses that minibatch
    assert not np.array_equal(np.asarray(jax.tree_util.tree_leaves(state.critic)[0]),
                              jax.tree_util.tree_leaves(before.critic)[0])
    assert_trees_equal(state.actor, before.actor)
    assert np.isfinite(float(metrics["critic_loss"]))

    # training goes on normally afterwards
    for _ in range(3):
        state, metrics = agent.update(state, random_batch(rng, cfg.utd * cfg.batch_size))
    assert int(metrics["skipped"]) == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state))


def test_overflowing_loss_is_skipped(agent):
    """A finite batch whose loss is not finite (a reward that overflows the squared error / logits)."""
    cfg = td3_recipe()
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    state = agent.init(0)
    batch = random_batch(np.random.default_rng(2), cfg.batch_size)
    batch["reward"][:] = 3e38
    new, metrics = agent.update(state, batch)
    assert int(metrics["skipped"]) == 1
    assert_trees_equal(new.critic, state.critic)


def test_batch_without_base_actions_is_a_user_error(agent):
    batch = random_batch(np.random.default_rng(0), agent.cfg.utd * agent.cfg.batch_size)
    del batch["next_base_action"]
    with pytest.raises(UserError, match="next_base_action"):
        agent.update(agent.init(0), batch)


def test_critic_reads_the_residual_in_units_of_scale():
    """critic_input=base_residual: the critic reads (base, (action - base) / scale clipped to +-residual_clip), so a
    residual of scale 0.05 is a unit-size input; the update runs on it and its values depend on the residual."""
    cfg = tiny_recipe(critic_input="base_residual", scale=0.05, residual_clip=3.0)
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    base = np.array([[0.2], [0.2], [0.2], [0.99]], np.float32)
    action = np.array([[0.25], [0.15], [0.9], [1.0]], np.float32)  # +1, -1, far (a demo action), clipped at the box
    got = np.asarray(agent.critic_action(base, action))
    np.testing.assert_allclose(got, [[0.2, 1.0], [0.2, -1.0], [0.2, 3.0], [0.99, 0.2]], atol=1e-5)
    state = agent.init(0)
    state, metrics = agent.update(state, random_batch(np.random.default_rng(0), cfg.utd * cfg.batch_size))
    assert int(metrics["skipped"]) == 0
    obs = np.zeros((2, OBS_DIM), np.float32)
    q = np.asarray(agent.q_values(state.critic, obs, base[:2], action[:2]))
    assert q.shape == (cfg.critic.num_critics, 2) and np.all(np.isfinite(q)) and not np.allclose(q[:, 0], q[:, 1])
    with pytest.raises(UserError, match="critic_input"):
        tiny_recipe(critic_input="pixels")


def test_demo_bc_pulls_the_residual_toward_the_demonstrated_correction():
    """bc_weight: on demo-side rows the residual learns the correction the demonstrator made ((action - base) /
    scale, clipped); rows from the policy's own steps add nothing to that term."""
    cfg = tiny_recipe(bc_weight=10.0)
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    rng = np.random.default_rng(0)
    batch = random_batch(rng, cfg.utd * cfg.batch_size)
    batch["action"] = np.clip(batch["base_action"] + 0.3 * cfg.scale, -1, 1).astype(np.float32)
    batch["demo"] = np.ones(len(batch["action"]), bool)
    batch["reward"], batch["discount"] = np.zeros_like(batch["reward"]), np.zeros_like(batch["discount"])  # flat Q
    state = agent.init(0)
    prepared = agent.prepare_batch(batch)
    online = {**prepared, "demo": np.zeros_like(prepared["demo"])}
    assert float(agent.demo_bc(state.actor, prepared["obs"], prepared["base_action"], prepared["action"],
                               online["demo"])) == 0.0
    before = float(agent.demo_bc(state.actor, prepared["obs"], prepared["base_action"], prepared["action"],
                                 prepared["demo"]))
    for _ in range(100):
        state, _ = agent.update(state, batch)
    after = float(agent.demo_bc(state.actor, prepared["obs"], prepared["base_action"], prepared["action"],
                                prepared["demo"]))
    assert after < 0.3 * before
    inside = np.abs(batch["base_action"][:, 0]) < 1 - cfg.scale  # rows whose demo action was not clipped by the box
    residual = agent.act(state, batch["obs"], batch["base_action"], deterministic=True)[inside]
    assert np.median(residual) > 0.15 * cfg.scale


def test_residual_l2_holds_the_residual_toward_the_base():
    """residual_l2 pulls the sampled residual toward 0 on every row: against a demo pull of equal weight toward +0.3
    (normalized units) on a flat critic, the residual settles near the midpoint 0.15 instead of 0.3, and its spread
    shrinks."""
    rng = np.random.default_rng(0)
    settled, spread = {}, {}
    for l2 in (0.0, 10.0):
        cfg = tiny_recipe(bc_weight=10.0, residual_l2=l2)
        agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
        batch = random_batch(np.random.default_rng(1), cfg.utd * cfg.batch_size)
        batch["base_action"] = rng.uniform(-0.4, 0.4, batch["base_action"].shape).astype(np.float32)  # no box clip
        batch["action"] = (batch["base_action"] + 0.3 * cfg.scale).astype(np.float32)
        batch["demo"] = np.ones(len(batch["action"]), bool)
        batch["reward"], batch["discount"] = np.zeros_like(batch["reward"]), np.zeros_like(batch["discount"])
        state = agent.init(0)
        for _ in range(150):
            state, _ = agent.update(state, batch)
        residual = agent.act(state, batch["obs"], batch["base_action"], deterministic=True)
        settled[l2] = float(np.median(residual)) / cfg.scale
        _, log_std = agent.policy(state.actor, batch["obs"], batch["base_action"])
        spread[l2] = float(np.median(np.exp(log_std)))
    assert 0.22 < settled[0.0] < 0.38
    assert 0.08 < settled[10.0] < 0.22
    assert spread[10.0] < spread[0.0]
    with pytest.raises(UserError, match="residual_l2"):
        tiny_recipe(residual_l2=-1.0)


@pytest.mark.parametrize("backup", [True, False])
def test_backup_entropy_decides_whether_the_temperature_enters_the_target(backup):
    """With backup_entropy the soft target carries -alpha log pi, so it moves with the temperature; without it the
    target is reward and Q alone, whatever the temperature."""
    cfg = tiny_recipe(backup_entropy=backup)
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    mb = agent.prepare_batch(random_batch(np.random.default_rng(2), cfg.batch_size))
    state = agent.init(0)
    target = jax.jit(lambda st, la: agent.critic_target(st.replace(log_alpha=la), mb, 1.0, as_key(st.key))[0])
    cold, hot = (np.asarray(target(state, jax.numpy.float32(la))) for la in (-5.0, 2.0))
    assert np.all(np.isfinite(cold)) and np.all(np.isfinite(hot))
    if backup:
        assert np.abs(hot - cold).mean() > 0.01
    else:
        np.testing.assert_array_equal(hot, cold)


def test_a_nested_recipe_override_changes_one_key_and_keeps_the_rest():
    """Hydra hands `+overrides.critic.hidden_dim=256` over as a nested mapping: the critic's other keys (categorical,
    bins) stay the recipe's."""
    overrides = OmegaConf.create({"critic": {"hidden_dim": 256}, "actor.hidden_dim": 64})
    cfg = load_recipe("ours", **dict(overrides))
    base = load_recipe("ours")
    assert (cfg.critic.hidden_dim, cfg.actor.hidden_dim) == (256, 64)
    assert (cfg.critic.categorical, cfg.critic.num_bins) == (base.critic.categorical, base.critic.num_bins)
    with pytest.raises(UserError, match="unknown critic key"):
        load_recipe("ours", critic={"width": 256})

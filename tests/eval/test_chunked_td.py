"""The chunked-TD evaluator on a small MDP with known true values: estimates converge to them and rank policies."""

from dataclasses import replace

import numpy as np
import pytest

from robot_rl.data import ReplayCache
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig, mc_value

GAMMA, GOAL, SPEED, MAX_STEPS = 0.95, 1.0, 0.1, 40
SPEC = {"obs/state": ((1,), np.float32), "action": ((1,), np.float32), "reward": ((), np.float32),
        "terminated": ((), bool)}


def rollout(policy, rng, start=0.0):
    """A 1-D line: x' = x + SPEED * a; reward 1 and termination on reaching GOAL; time limit MAX_STEPS."""
    x, steps = start, []
    for _ in range(MAX_STEPS):
        a = float(np.clip(policy(x, rng), -1, 1))
        x_next = x + SPEED * a
        done = x_next >= GOAL - 1e-6
        steps.append((x, a, float(done), done))
        x = x_next
        if done:
            break
    return {"obs/state": np.array([[s[0]] for s in steps], np.float32),
            "action": np.array([[s[1]] for s in steps], np.float32),
            "reward": np.array([s[2] for s in steps], np.float32), "terminated": np.array([s[3] for s in steps])}


def true_value(speed_fraction):
    """A constant action a reaches the goal after ceil(GOAL / (SPEED * a)) steps: value gamma^(steps - 1)."""
    steps = int(np.ceil(GOAL / (SPEED * speed_fraction) - 1e-9))
    return GAMMA ** (steps - 1) if steps <= MAX_STEPS else 0.0


@pytest.fixture(scope="module")
def cache():
    rng = np.random.default_rng(0)
    cache = ReplayCache(50_000, SPEC)
    for _ in range(150):  # behaviour: noisy forward motion of varied speed (mixed quality)
        speed = rng.uniform(0.2, 1.0)
        cache.add_episode(rollout(lambda x, r, s=speed: s + r.normal(0, 0.4), rng), "policy")
    for _ in range(50):
        cache.add_episode(rollout(lambda x, r: 1.0, rng), "scripted")
    return cache


def constant_policy(a, horizon=8):
    return lambda obs: np.full((len(obs["state"]), horizon, 1), a, np.float32)


def test_estimates_converge_to_true_values_and_rank(cache):
    cfg = EvaluatorConfig(horizon=4, gamma=GAMMA, num_critics=3, hidden_dim=64, updates=600, updates_per_call=300,
                          batch_size=128, tau=0.02)
    evaluator = ChunkedTDEvaluator(cfg, cache)
    speeds = [1.0, 0.7, 0.5]
    estimates = [evaluator.fit(constant_policy(a)) for a in speeds]
    truths = [true_value(a) for a in speeds]
    for est, truth in zip(estimates, truths):
        assert abs(est.value - truth) < 0.08, (est.value, truth)
        assert est.pessimistic <= est.value and est.spread >= 0
    assert [e.value for e in estimates] == sorted([e.value for e in estimates], reverse=True)
    assert estimates[0].losses[-1] < estimates[0].losses[0]


def test_per_step_fqe_is_horizon_one(cache):
    cfg = EvaluatorConfig(horizon=1, gamma=GAMMA, num_critics=2, hidden_dim=64, updates=1200, updates_per_call=600,
                          batch_size=128, tau=0.05)
    est = ChunkedTDEvaluator(cfg, cache).fit(constant_policy(1.0, horizon=1))
    assert abs(est.value - true_value(1.0)) < 0.1


def test_shared_proposals_give_the_same_fit(cache):
    """FQE reuses the chunked evaluator's pass over the cache (the first action of each longer chunk): same fit as
    running the policy itself; proposals that do not cover the cache are a clear error."""
    policy = lambda obs: np.linspace(0.5, 1.0, 8, dtype=np.float32)[None, :, None].repeat(len(obs["state"]), 0)
    chunked = ChunkedTDEvaluator(EvaluatorConfig(horizon=4, hidden_dim=16, updates=20, updates_per_call=20), cache)
    fqe = ChunkedTDEvaluator(EvaluatorConfig(horizon=1, hidden_dim=16, updates=20, updates_per_call=20), cache)
    proposals = chunked.policy_chunks(policy, np.flatnonzero(cache.valid))
    assert proposals.shape[1] == 4
    assert fqe.fit(policy, proposals).value == fqe.fit(policy).value
    assert chunked.fit(policy, proposals).value == chunked.fit(policy).value
    from robot_rl.errors import UserError

    with pytest.raises(UserError, match="compute them with policy_chunks"):
        chunked.fit(policy, proposals[:, :2])


def test_time_limit_counts_returns_within_it(cache):
    """A policy too slow to reach the goal within MAX_STEPS is worth 0 to the time-limited evaluator, whose critic
    sees the step; without the limit the timed-out windows bootstrap past it and the same policy looks worth more."""
    from robot_rl.errors import UserError

    cfg = EvaluatorConfig(horizon=4, gamma=GAMMA, num_critics=3, hidden_dim=64, updates=600, updates_per_call=300,
                          batch_size=128, tau=0.02)
    limited = ChunkedTDEvaluator(replace(cfg, time_limit=MAX_STEPS), cache)
    assert true_value(0.2) == 0.0 and true_value(1.0) > 0.6
    slow, fast = limited.fit(constant_policy(0.2)), limited.fit(constant_policy(1.0))
    assert abs(slow.value) < 0.06 and abs(fast.value - true_value(1.0)) < 0.08, (slow.value, fast.value)
    unlimited = ChunkedTDEvaluator(cfg, cache).fit(constant_policy(0.2))
    assert unlimited.value > slow.value + 0.02, (unlimited.value, slow.value)  # measured 0.078 vs 0.043
    chunk = np.ones((2, 4, 1), np.float32)
    late = limited.q_values(np.zeros((2, 1)), chunk, steps=np.array([0, MAX_STEPS - 2])).mean(axis=0)
    assert late[1] < late[0]  # two steps before the limit nothing is reachable from x = 0
    with pytest.raises(UserError, match="steps="):
        limited.q_values(np.zeros((2, 1)), chunk)
    from robot_rl.eval.steering import SteeredPolicy

    with pytest.raises(UserError, match="time_limit=null"):  # a steered policy does not know its episode step
        SteeredPolicy(constant_policy(1.0), limited)
    with pytest.raises(UserError, match="time_limit"):
        ChunkedTDEvaluator(EvaluatorConfig(time_limit=0), cache)


def test_proximity_draws_windows_like_the_policy_and_still_converges(cache):
    """With `proximity`, windows whose logged chunk is what the policy would do are drawn far more often (the others
    keep the floor weight), and the estimates still converge to the true values and rank the policies."""
    from robot_rl.data import ChunkSampler
    from robot_rl.errors import UserError

    cfg = EvaluatorConfig(horizon=4, gamma=GAMMA, num_critics=3, hidden_dim=64, updates=600, updates_per_call=300,
                          batch_size=128, tau=0.02, proximity=0.3)
    evaluator = ChunkedTDEvaluator(cfg, cache)
    sampler = ChunkSampler(cache, 4, GAMMA)
    pi = np.ones((cache.capacity, 4), np.float32)  # the policy "always 1.0": the scripted episodes' chunks exactly
    starts, probs = evaluator.proximity_weights(sampler, pi)
    assert probs.sum() == pytest.approx(1.0) and set(starts) <= set(np.flatnonzero(cache.valid))
    logged = cache.data["action"][:, 0]
    exact = np.array([np.all(logged[s:s + 4] == 1.0) and cache.steps_left[s] >= 4 for s in starts])
    assert exact.any() and (~exact).any()
    assert probs[exact].min() == pytest.approx(probs.max())  # weight 1 + floor: the most likely windows
    assert probs.min() >= 0.01 / 1.01 * probs.max() - 1e-12  # nothing is dropped
    assert probs[exact].sum() > 2 * exact.mean()  # drawn more often than uniformly
    speeds = [1.0, 0.7, 0.5]
    estimates = [evaluator.fit(constant_policy(a)).value for a in speeds]
    for est, a in zip(estimates, speeds):
        assert abs(est - true_value(a)) < 0.08, (est, true_value(a))
    assert estimates == sorted(estimates, reverse=True)
    with pytest.raises(UserError, match="proximity"):
        ChunkedTDEvaluator(EvaluatorConfig(proximity=0.0), cache)


def test_monte_carlo_baseline_by_hand():
    cache = ReplayCache(100, SPEC)
    for length in (3, 5):
        cache.add_episode(rollout(lambda x, r: 1.0, None, start=GOAL - SPEED * length), "policy")
    assert mc_value(cache, GAMMA) == pytest.approx((GAMMA**2 + GAMMA**4) / 2)


def test_bad_policy_output(cache):
    evaluator = ChunkedTDEvaluator(EvaluatorConfig(horizon=4, hidden_dim=16, updates=1), cache)
    from robot_rl.errors import UserError

    with pytest.raises(UserError, match="returned chunks of shape"):
        evaluator.fit(lambda obs: np.zeros((len(obs["state"]), 2, 1), np.float32))


def test_gate_accepts_better_rejects_worse_and_steering_picks_better_chunks(cache):
    from robot_rl.eval.gate import DeploymentGate
    from robot_rl.eval.steering import SteeredPolicy

    cfg = EvaluatorConfig(horizon=4, gamma=GAMMA, num_critics=3, hidden_dim=64, updates=600, updates_per_call=300,
                          batch_size=128, tau=0.02)
    evaluator = ChunkedTDEvaluator(cfg, cache)
    slow, fast = evaluator.fit(constant_policy(0.4)), evaluator.fit(constant_policy(1.0))
    gate = DeploymentGate(margin=0.02)
    assert gate.decide(fast, slow).accept and not gate.decide(slow, fast).accept
    assert not gate.decide(fast, fast).accept  # no better than itself by the margin
    assert "does not beat" in gate.decide(slow, fast).reason

    # steering: a noisy base samples chunks of random speed; the critic (fitted for the fast policy) prefers speed
    rng = np.random.default_rng(1)
    noisy = lambda obs: np.repeat(rng.uniform(-0.2, 1.0, (len(obs["state"]), 1, 1)), 8, axis=1).astype(np.float32)
    steered = SteeredPolicy(noisy, evaluator, k=16)
    obs = {"state": np.linspace(0.0, 0.8, 32, dtype=np.float32)[:, None]}
    assert steered(obs).mean() > noisy(obs).mean() + 0.3


def test_chunk_targets_at_episode_ends_by_hand():
    """The evaluator's target on sampled windows: bootstrap only where s_{t+H} exists; terminal windows do not."""
    import jax.numpy as jnp

    from robot_rl.data import ChunkSampler
    from robot_rl.eval.chunked_td import td_target

    small = ReplayCache(64, SPEC)
    terminal = {"obs/state": np.arange(4, dtype=np.float32)[:, None], "action": np.zeros((4, 1), np.float32),
                "reward": np.array([0, 0, 0, 1], np.float32), "terminated": np.array([0, 0, 0, 1], bool)}
    limited = {"obs/state": np.arange(20, 25, dtype=np.float32)[:, None], "action": np.zeros((5, 1), np.float32),
               "reward": np.full(5, 0.5, np.float32), "terminated": np.zeros(5, bool)}
    small.add_episode(terminal, "policy")
    small.add_episode(limited, "policy")
    batch = ChunkSampler(small, horizon=3, gamma=0.9, fractions={"online": 1}, seed=0).sample(2000)
    next_q = 2.0  # a constant critic
    y = np.asarray(td_target(jnp.asarray(batch["reward"]), jnp.asarray(batch["discount"]), next_q, -10.0, 10.0))
    by_start = {float(s): v for s, v in zip(batch["obs/state"][:, 0], y)}
    g = 0.9
    expected = {0: g**3 * next_q,  # full window, s_3 exists and is not past the end: bootstrap
                1: g**2 * 1,  # the window reaches the terminal step: its reward, no bootstrap
                2: g * 1, 3: 1.0,
                20: 0.5 * (1 + g + g**2) + g**3 * next_q, 21: 0.5 * (1 + g + g**2) + g**3 * next_q}
    assert set(by_start) == set(expected)  # time-limited: starts 22-24 would leave no s_{t+3}
    for start, value in expected.items():
        assert by_start[start] == pytest.approx(value, rel=1e-5), start
    assert float(td_target(0.0, g**3, 100.0, -1.0, 1.0)) == 1.0  # clipped to the value range


def test_policy_history_never_crosses_an_episode_start(cache):
    evaluator = ChunkedTDEvaluator(EvaluatorConfig(horizon=4, hidden_dim=16, updates=1), cache)
    starts = cache.episode_starts()
    slots = np.array([starts[3], starts[3] + 1, starts[3] + 5])
    history = evaluator.history_slots(slots, 3)
    assert history.tolist() == [[starts[3]] * 3, [starts[3], starts[3], starts[3] + 1],
                                [starts[3] + 3, starts[3] + 4, starts[3] + 5]]
    seen = []

    class TwoStep:
        n_obs_steps = 2

        def __call__(self, obs):
            seen.append(obs["state"].shape)
            return np.zeros((len(obs["state"]), 4, 1), np.float32)

    evaluator.policy_chunks(TwoStep(), slots)
    assert seen == [(3, 2, 1)]


def test_steering_keep_scores_only_typical_samples(cache):
    """With `keep`, steering takes the critic's best among the samples nearest the samples' mean; an outlier is never
    picked however the critic scores it. Without it, the critic's best of all; keep out of range is a UserError."""
    from robot_rl.errors import UserError
    from robot_rl.eval.steering import SteeredPolicy

    cfg = EvaluatorConfig(horizon=4, gamma=GAMMA, num_critics=2, hidden_dim=32, updates=200, updates_per_call=200,
                          batch_size=64)
    evaluator = ChunkedTDEvaluator(cfg, cache)
    evaluator.fit(constant_policy(1.0))
    speeds = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 3.0], np.float32)  # mean 0.725; 3.0 is far out
    samples = lambda obs: np.repeat(speeds[np.arange(len(obs["state"])) % 8, None, None], 8, axis=1)  # row i: i % 8
    obs = {"state": np.full((3, 1), 0.2, np.float32)}
    scores = evaluator.q_values(np.full((8, 1), 0.2), samples({"state": np.zeros((8, 1))})[:, :4]).min(axis=0)
    assert np.all(SteeredPolicy(samples, evaluator, k=8)(obs) == speeds[scores.argmax()])
    typical = [3, 4, 5, 6]  # 0.4-0.7, the 4 nearest the mean
    pruned = SteeredPolicy(samples, evaluator, k=8, keep=4)(obs)
    assert np.all(pruned == speeds[typical[int(scores[typical].argmax())]])
    assert np.all(SteeredPolicy(samples, evaluator, k=8, keep=1)(obs) == 0.7)  # the most typical sample
    with pytest.raises(UserError, match="keep=9"):
        SteeredPolicy(samples, evaluator, k=8, keep=9)

"""End to end on a tiny sparse-reward task: residual RL lifts a biased base policy within a small step budget."""

import dataclasses

import numpy as np
from rl_helpers import biased_base, make_point_mass_envs, tiny_recipe

from robot_rl.data import ReplayCache
from robot_rl.rl.checkpoint import load_checkpoint
from robot_rl.rl.loop import LoopConfig, best_dir, evaluate, train
from robot_rl.rl.replay import EpisodeReplay, replay_spec

STEPS = 800  # online env steps over 4 envs, 300 of them warm-up; the residual reaches ~100% by ~750 here


def test_residual_success_rises_above_biased_base(tmp_path):
    cfg = tiny_recipe()
    loop = LoopConfig(total_steps=STEPS, seed=0, eval_episodes=40, log_every=200, checkpoint_dir=str(tmp_path))
    result = train(make_point_mass_envs(4), cfg, loop, base=biased_base, eval_envs=make_point_mass_envs(8))

    base_only = evaluate(make_point_mass_envs(8), 40, biased_base, seed=0)
    first, last = result.evals[0], result.evals[-1]
    assert 0.25 <= base_only["success"] <= 0.7  # the base is imperfect but not hopeless
    assert first["env_steps"] == 0 and first["success"] == base_only["success"]  # zero residual = base
    assert last["env_steps"] == result.env_steps == STEPS
    assert last["success"] >= 0.9 and last["success"] >= base_only["success"] + 0.25
    assert result.logs and all(r["skipped"] == 0 for r in result.logs)
    assert all(np.isfinite(r["critic_loss"]) for r in result.logs)

    # the most successful evaluation's state is kept apart (here the last one), and a resumed run keeps it as the bar
    assert result.best == last
    best, sidecar = load_checkpoint(best_dir(tmp_path), result.agent.init(1))
    assert sidecar["step"] == STEPS and sidecar["meta"]["evaluation"] == last
    assert evaluate(make_point_mass_envs(8), 40, biased_base, result.agent, best, seed=0)["success"] == last["success"]
    more = dataclasses.replace(loop, total_steps=STEPS + 8, resume=True)
    resumed = train(make_point_mass_envs(4), cfg, more, base=biased_base, eval_envs=make_point_mass_envs(8))
    assert [e["env_steps"] for e in resumed.evals] == [STEPS + 8]
    expected = resumed.evals[0] if resumed.evals[0]["success"] > last["success"] else last
    assert resumed.best == expected and load_checkpoint(best_dir(tmp_path), best)[1]["meta"]["evaluation"] == expected


def test_correlated_exploration_reaches_the_executed_residuals():
    """With `noise_correlation` the loop acts with AR(1) noise: after the warm-up the residuals an env executes (actor
    step size ~0, so the mean stays the zero-initialized head's and the residual is scale * tanh(std * eps)) follow
    the noise's correlation from step to step (measured 0.905 for 0.9), and a new episode starts afresh."""
    rho, num_envs = 0.9, 4
    cfg = tiny_recipe(noise_correlation=rho, actor_lr=1e-9)
    steps: list[dict] = []

    class Recorder(EpisodeReplay):
        def add(self, step):
            steps.append(step)
            super().add(step)

    replay = Recorder(ReplayCache(10_000, replay_spec(2, 1)), cfg, num_envs)
    loop = LoopConfig(total_steps=cfg.warmup_steps + 1200, seed=0, log_every=10_000)
    train(make_point_mass_envs(num_envs), cfg, loop, base=biased_base, replay=replay)

    eps = np.arctanh(np.stack([s["residual_action"][:, 0] for s in steps]) / cfg.scale)  # (iterations, envs)
    done = np.stack([s["terminated"] | s["truncated"] for s in steps])
    warm = cfg.warmup_steps // num_envs

    def lag1(rows: slice) -> float:
        x, y, cut = eps[rows][1:], eps[rows][:-1], done[rows][:-1]  # pairs within an episode only
        x, y = x[~cut] - x[~cut].mean(), y[~cut] - y[~cut].mean()
        return float(np.mean(x * y) / np.sqrt(np.mean(x ** 2) * np.mean(y ** 2)))

    assert abs(lag1(slice(warm, None)) - rho) < 0.08
    across = eps[warm + 1:][done[warm:-1]], eps[warm:-1][done[warm:-1]]  # first step of an episode vs the last
    assert len(across[0]) >= 20 and abs(np.corrcoef(*across)[0, 1]) < 0.4

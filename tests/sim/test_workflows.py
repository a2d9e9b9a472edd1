"""collect, evaluate and bench sim: the verbs that wire the mirrors to the episode store."""

import json
import subprocess
import sys

import numpy as np
import pytest

import sim
from robot_rl.data import EpisodeStore, validate
from robot_rl.errors import UserError
from robot_rl.workflows.benchmarks.sim import bench_sim
from robot_rl.workflows.collect import collect
from robot_rl.workflows.evaluate import evaluate_policy


def robot_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


def test_collect_writes_a_valid_store_that_replays_in_the_mirror(tmp_path):
    root = tmp_path / "push"
    result = collect("PushCube", root, episodes=4, seed=7, progress=False)
    assert result["episodes"] == 4 and result["success_rate"] >= 0.75
    assert validate(str(root))["episodes"] == 4
    store = EpisodeStore.open(root)
    assert store.num_steps == result["steps"]
    meta = store.episode_meta(0)
    assert meta["source"] == "scripted" and meta["task"] == "PushCube" and meta["domain"] == "nominal"
    episode = store.episode(0)
    assert np.isnan(episode["human_action"]).all() and not episode["intervention"].any()
    np.testing.assert_array_equal(episode["action"], episode["policy_action"])
    assert episode["terminated"][-1] == meta["success"] and episode["reward"].sum() == float(meta["success"])
    env = sim.make_env("PushCube")  # same seed, same stored actions: the stored observations come back
    obs, _ = env.reset(seed=7)
    for t, action in enumerate(episode["action"]):
        np.testing.assert_allclose(obs["state"], episode["obs/state"][t], atol=1e-5)
        obs, *_ = env.step(action)


def test_recovery_demos_start_off_course_and_record_the_expert_recovering(tmp_path):
    plain = EpisodeStore.open(collect("PushCube", tmp_path / "plain", episodes=1, seed=7, progress=False)["out"])
    result = collect("PushCube", tmp_path / "rec", episodes=4, seed=7, recovery_steps=20, progress=False)
    store = EpisodeStore.open(result["out"])
    assert store.num_episodes == 4 and result["success_rate"] >= 0.5  # the expert recovers from its detour
    first = store.episode(0)
    # same reset, then an unrecorded detour: the recorded episode starts with the arm elsewhere and already moving
    assert np.linalg.norm(first["obs/state"][0, 8:11] - plain.episode(0)["obs/state"][0, 8:11]) > 0.005
    assert np.abs(first["obs/state"][0, 4:8]).max() > 0.01
    np.testing.assert_array_equal(first["action"], first["policy_action"])  # clean labels only
    with pytest.raises(UserError, match="recovery_steps"):
        collect("PushCube", tmp_path / "bad", episodes=1, recovery_steps=-1, progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_missing_expert_closes_beside_the_cube_and_the_clean_expert_picks_it_up():
    env, expert = sim.make_env("PickPlace"), sim.make_expert("PickPlace", seed=4)  # seed 4: a miss along x
    obs, _ = env.reset(seed=3)
    expert.reset(missing=True)
    for _ in range(40):
        obs, *_ = env.step(expert.act(obs))
        state = {name: obs["state"][sl] for name, sl in expert.slices.items()}
        if state["joint_pos"][-1] < 0.012:  # fingers closed past the cube's half width: nothing between them
            break
    assert state["joint_pos"][-1] < 0.012 and not expert.held[0]
    assert np.linalg.norm(state["tcp_pos"][:2] - state["cube_pos"][:2]) > 0.02 and state["cube_pos"][2] < 0.03
    expert.reset()
    done = success = False
    while not done:
        obs, _, success, truncated, _ = env.step(expert.act(obs))
        done = success or truncated
    assert success  # re-opens, re-grasps and places


def test_missed_grasp_recovery_demos_have_clean_labels_and_bad_kinds_are_refused(tmp_path):
    result = collect("PickPlace", tmp_path / "rec", episodes=4, seed=11, recovery_steps=16, recovery_from="object",
                     progress=False)
    assert result["success_rate"] >= 0.75
    episode = EpisodeStore.open(result["out"]).episode(0)
    np.testing.assert_array_equal(episode["action"], episode["policy_action"])
    with pytest.raises(UserError, match="recovery_from"):
        collect("PickPlace", tmp_path / "bad", episodes=1, recovery_steps=4, recovery_from="elbow", progress=False)
    assert not (tmp_path / "bad").exists()


def test_collect_with_a_camera_and_a_variant_appends_to_the_store(tmp_path):
    root = tmp_path / "pick"
    first = collect("PickPlace", root, episodes=1, variant={"name": "real_a", "latency": 0}, cameras=["wrist"],
                    image_size=16, progress=False)
    collect("PickPlace", root, episodes=1, variant={"name": "real_a", "latency": 0}, cameras=["wrist"],
            image_size=16, seed=1, progress=False)
    store = EpisodeStore.open(root)
    assert store.num_episodes == 2 and first["variant"] == "real_a[latency=0]"
    assert store.episode_meta(1)["domain"] == "real_a[latency=0]"
    images = store.episode(0)["obs/image_wrist"]
    assert images.shape[1:] == (16, 16, 3) and images.dtype == np.uint8 and images.std() > 1


def test_evaluate_the_expert_reports_success_and_return():
    result = evaluate_policy("PickPlace", "expert", episodes=4, progress=False)
    assert set(result) >= {"success_rate", "mean_return", "mean_length", "episodes"}
    assert result["episodes"] == 4 and result["success_rate"] >= 0.75
    assert result["mean_return"] == pytest.approx(result["success_rate"])  # reward 1 on the success step only
    failing = evaluate_policy("PickPlace", "expert", episodes=2, fail_prob=1.0, progress=False)
    assert failing["success_rate"] == 0.0 and failing["mean_length"] == 150


def test_evaluate_with_action_noise_runs_noisy_actions():
    """PushCube's pushes are precise: noise on every executed action fails the expert that succeeds without it."""
    clean = evaluate_policy("PushCube", "expert", episodes=3, progress=False)
    noisy = evaluate_policy("PushCube", "expert", episodes=3, progress=False, action_noise=0.3)
    assert clean["success_rate"] == 1.0 and noisy["success_rate"] == 0.0


def test_cli_collect_then_validate_and_evaluate(tmp_path):
    root = tmp_path / "reach"
    collected = robot_rl("collect", "task=Reach", "episodes=3", f"out={root}", "expert.noise=0.01")
    assert collected.returncode == 0, collected.stderr
    summary = json.loads(collected.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 3 and summary["steps"] > 0 and 0 <= summary["success_rate"] <= 1
    assert robot_rl("data", "validate", str(root)).returncode == 0
    steps = EpisodeStore.open(root).episode(0, ["action", "policy_action"])  # executed vs the expert's proposal
    assert 0 < np.abs(steps["action"] - steps["policy_action"]).max() < 0.1
    evaluated = robot_rl("evaluate", "task=Reach", "episodes=2", "variant=real_b", "variant.friction=0.9")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["variant"] == "real_b[friction=0.9]" and result["episodes"] == 2


@pytest.mark.parametrize("args", [("collect", "task=Stack", "out=x"), ("evaluate", "task=Reach", "variant=real_z"),
                                  ("collect", "task=Reach"), ("evaluate", "task=Reach", "action_noise=-0.1")])
def test_cli_bad_input_is_one_line_and_exit_2(args, tmp_path):
    done = robot_rl(*args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_bench_sim_reports_state_and_image_throughput():
    result = bench_sim(task="Reach", num_envs=2, steps=40, image_steps=6, image_size=16)
    for prefix in ("", "image_"):
        assert result[f"{prefix}env_steps_per_s"] > 0 and result[f"{prefix}vec_env_steps_per_s"] > 0
        assert result[f"{prefix}vec_mode"] in ("sync", "async")
    assert result["num_envs"] == 2

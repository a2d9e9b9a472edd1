"""Training from a real episode store: learning, determinism, resume, bad stores, and the `robot-rl` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_helpers import ACTION_DIM, TASK, tiny_policy, tiny_train, write_point_store
from safetensors.torch import load_file

from robot_rl.errors import UserError
from robot_rl.policies import load_policy, train_policy

ROOT = Path(__file__).parents[2]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("kind,images", [("bc", False), ("diffusion", False), ("diffusion", True)])
def test_training_reduces_validation_loss(tmp_path, point_store, point_image_store, kind, images):
    store = point_image_store if images else point_store
    keys = ("state", "image_front") if images else ("state",)
    result = train_policy(store, tmp_path, tiny_policy(kind, obs_keys=keys), tiny_train(), progress=False)
    val = [entry["val_loss"] for entry in result.history if "val_loss" in entry]
    assert len(val) == 3  # before training, after 30 and after 60 steps
    assert val[-1] < 0.6 * val[0], val
    assert result.metrics["val_action_mse"] < result.history[0]["val_action_mse"]
    policy = load_policy(result.checkpoint, task=TASK, action_dim=ACTION_DIM)
    assert policy.spec.obs_keys == keys and policy.spec.kind == kind


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path, point_store):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = train_policy(point_store, tmp_path / name, tiny_policy(), tiny_train(steps=20, seed=seed),
                                  progress=False).checkpoint
    assert same_weights(runs["a"], runs["b"])
    assert not same_weights(runs["a"], runs["c"])


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, point_store):
    """A run that dies right after its step-20 checkpoint (here: its success evaluation crashes), resumed, ends
    with the same weights as a run that never stopped."""

    def evaluate_ok(path: Path) -> dict:
        return {"success_rate": 0.5}

    def evaluate_crash(path: Path) -> dict:
        raise RuntimeError("simulator crashed")

    config = tiny_train(steps=40, ckpt_every=20, eval_every=20)
    straight = train_policy(point_store, tmp_path / "straight", tiny_policy(), config, evaluate=evaluate_ok,
                            progress=False)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        train_policy(point_store, tmp_path / "resumed", tiny_policy(), config, evaluate=evaluate_crash,
                     progress=False)
    resumed = train_policy(point_store, tmp_path / "resumed", tiny_policy(), config, evaluate=evaluate_ok,
                           progress=False)
    assert resumed.steps == 40 and resumed.best_checkpoint is not None
    assert same_weights(straight.checkpoint, resumed.checkpoint)
    assert same_weights(tmp_path / "straight" / "train_state.safetensors",
                        tmp_path / "resumed" / "train_state.safetensors")


def test_resume_with_other_settings_is_refused(tmp_path, point_store):
    train_policy(point_store, tmp_path, tiny_policy(), tiny_train(steps=10), progress=False)
    with pytest.raises(UserError, match="different spec, config"):
        train_policy(point_store, tmp_path, tiny_policy(horizon=16), tiny_train(steps=20), progress=False)


def test_store_without_the_keys_the_config_asks_for(tmp_path, point_store):
    with pytest.raises(UserError, match=r"no key\(s\) \['obs/image_front'\]"):
        train_policy(point_store, tmp_path, tiny_policy(obs_keys=("state", "image_front")), tiny_train(),
                     progress=False)
    with pytest.raises(UserError, match=r"no key\(s\) \['expert_action'\]"):
        train_policy(point_store, tmp_path, tiny_policy(), tiny_train(action_key="expert_action"), progress=False)


def test_store_of_another_task(tmp_path, point_store):
    with pytest.raises(UserError, match=f"holds episodes of task\\(s\\) \\['{TASK}'\\], not 'PushCube'"):
        train_policy(point_store, tmp_path, tiny_policy(), tiny_train(), task="PushCube", progress=False)


def test_store_with_a_single_episode_cannot_be_split(tmp_path):
    store = write_point_store(tmp_path / "one", episodes=1)
    with pytest.raises(UserError, match="at least 2"):
        train_policy(store, tmp_path / "out", tiny_policy(), tiny_train(), progress=False)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_train_base_command(tmp_path, point_store):
    out = tmp_path / "run"
    proc = run_cli("train-base", "policy=bc", f"data={point_store}", f"out={out}", "train.steps=30",
                   "train.val_every=10", "train.val_fraction=0.25", "policy.horizon=8", "policy.n_action_steps=4",
                   "policy.mlp_hidden=[32,32]")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(out / "policy.safetensors") and summary["steps"] == 30
    assert summary["val_loss"] < summary["val_loss_initial"]
    assert "train-base bc" in proc.stderr  # the progress bar goes to stderr
    policy = load_policy(summary["checkpoint"])
    assert policy.act({"state": np.zeros(4, np.float32)}).shape == (8, ACTION_DIM)
    assert json.loads((out / "metrics.json").read_text())[-1]["step"] == 30


@pytest.mark.parametrize("args,message", [
    ((), "give the episode store to train on"),
    (("data=/nonexistent/store",), "does not exist"),
    (("policy=transformer", "data=x"), "policy"),
])
def test_train_base_command_bad_input(args, message):
    proc = run_cli("train-base", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bench_base_policy_command():
    proc = run_cli("bench", "base-policy", "steps=40", "chunks=5", "progress=false")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("chunk_latency_ms_p50", "chunk_latency_ms_p99", "step_latency_ms_p99", "missed_deadlines"):
        assert result[key] >= 0
    assert (result["ddim_steps"], result["horizon"], result["steps"]) == (10, 16, 40)
    assert result["chunks_used"] >= 2
    assert result["cpu_steal_s"] is None or result["cpu_steal_s"] >= 0  # None where /proc/stat has no steal

"""A trained checkpoint runs in the sim mirror through `robot-rl evaluate`, under every scheduler mode."""

from __future__ import annotations

import json

import pytest
from policy_helpers import tiny_policy, tiny_train

from robot_rl.errors import UserError
from robot_rl.policies import load_policy, train_policy

sim = pytest.importorskip("sim")
from robot_rl.workflows.collect import collect  # noqa: E402
from robot_rl.workflows.evaluate import evaluate_policy  # noqa: E402
from robot_rl.workflows.train_base import train_base  # noqa: E402


@pytest.fixture(scope="module")
def push_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    collect("PushCube", root / "demos", episodes=4, seed=0, progress=False)
    result = train_policy(root / "demos", root / "policy", tiny_policy("bc"), tiny_train(steps=10), progress=False)
    return result.checkpoint


@pytest.mark.parametrize("mode", ["open_loop", "ensemble", "async"])
def test_checkpoint_runs_through_evaluate(push_checkpoint, mode):
    result = evaluate_policy(task="PushCube", policy=str(push_checkpoint), episodes=2, scheduler=mode, seed=3,
                             task_settings={"max_steps": 12}, progress=False)
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert 0 < result["mean_length"] <= 12


def test_checkpoint_of_another_task_is_refused_by_evaluate(push_checkpoint):
    with pytest.raises(UserError, match="trained for task 'PushCube', not 'PickPlace'"):
        evaluate_policy(task="PickPlace", policy=str(push_checkpoint), episodes=1, progress=False)
    assert load_policy(push_checkpoint).spec.task == "PushCube"


def test_train_base_evaluates_in_the_mirror_and_keeps_the_best(tmp_path, push_checkpoint):
    demos = push_checkpoint.parents[1] / "demos"
    summary = train_base(demos, tmp_path, policy=tiny_policy("bc"), train=tiny_train(steps=20, eval_every=10),
                         eval_episodes=1, progress=False)
    evaluated = [e for e in json.loads((tmp_path / "metrics.json").read_text()) if "success_rate" in e]
    assert [e["step"] for e in evaluated] == [10, 20]
    assert summary["best_checkpoint"] == str(tmp_path / "best.safetensors")
    assert summary["best_success_rate"] == max(e["success_rate"] for e in evaluated)
    assert load_policy(summary["best_checkpoint"]).spec.task == "PushCube"

"""bench residual-ceiling: the base moved toward the scripted expert by at most `scale`, on the controlled base."""

import json

import numpy as np

from robot_rl.cli.main import main
from robot_rl.policies.expert_base import ExpertBase, ExpertSpec
from robot_rl.workflows.benchmarks.residual_ceiling import TowardExpert, residual_ceiling


class Constant:
    def __init__(self, action: np.ndarray) -> None:
        self.action = action

    def __call__(self, obs):
        return np.repeat(self.action[None], len(obs["state"]), axis=0)


def test_correction_is_the_expert_difference_clipped_to_scale():
    import sim

    env = sim.make_env("PushCube")
    obs, _ = env.reset(seed=0)
    batch = {"state": obs["state"][None]}
    expert = ExpertBase("PushCube", 1)(batch)[0]
    base = Constant(np.clip(expert + np.array([0.3, -0.01, 0.0, 0.0], np.float32), -1, 1))
    moved = TowardExpert(base, ExpertBase("PushCube", 1), scale=0.05)(batch)[0]
    np.testing.assert_allclose(moved - base.action, np.clip(expert - base.action, -0.05, 0.05), atol=1e-6)
    assert np.allclose(TowardExpert(base, ExpertBase("PushCube", 1), scale=0.0)(batch), base.action)
    np.testing.assert_allclose(TowardExpert(base, ExpertBase("PushCube", 1), scale=2.0)(batch)[0], expert, atol=1e-6)


def test_a_bias_within_scale_is_corrected_and_a_tighter_bound_corrects_less():
    """The expert off by 0.028 on joint 0 fails most pushes; a bound of 0.03 cancels the bias, 0.005 only partly."""
    spec = ExpertSpec((0.028, 0.0, 0.0, 0.0))
    ceiling = residual_ceiling("PushCube", spec, [0.0, 0.005, 0.03], episodes=10, num_envs=5)
    assert ceiling[0.0] <= 0.5
    assert ceiling[0.03] >= 0.9 and ceiling[0.03] > ceiling[0.005] > ceiling[0.0]


def test_cli_prints_the_ceiling_per_scale_and_rejects_a_negative_scale(capsys):
    assert main(["bench", "residual-ceiling", "base_kind=expert", "scales=[0.03]", "episodes=5", "num_envs=5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"task", "base", "episodes", "base_success", "ceiling"}
    assert result["ceiling"]["0.03"] >= result["base_success"]
    assert main(["bench", "residual-ceiling", "base_kind=expert", "scales=[-0.1]"]) != 0
    assert "scales >= 0" in capsys.readouterr().err

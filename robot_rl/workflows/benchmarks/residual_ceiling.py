"""`robot-rl bench residual-ceiling task=... scales=[...]`: how far a residual of each `scale` could lift a base.

Before spending 100k robot or mirror steps on residual RL, check that the residual's bound can fix the base's
failures at all. At every step the scripted expert says what it would do; the executed action is the base action
moved toward it by at most `scale` per dimension, `clip(base + clip(expert - base, -scale, scale), -1, 1)`: the best
a residual that only corrects the present step can do (a residual that plans ahead could do somewhat better, so
this is a lower bound of the true ceiling, and a close one when the base fails by drifting). A scale whose ceiling
is below the target cannot reach it, whatever the learner. Last line JSON: `base_success` (scale 0), and per scale
its success in `ceiling`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from robot_rl.errors import UserError
from robot_rl.policies.expert_base import ExpertBase
from robot_rl.rl.loop import evaluate
from robot_rl.rl.residual import compose_action
from robot_rl.workflows.benchmarks.residual import bench_base
from robot_rl.workflows.train_residual import OBS_KEY, load_base


class TowardExpert:
    """The base moved toward the scripted expert by at most `scale` per action dimension, batched over envs."""

    def __init__(self, base, expert: ExpertBase, scale: float) -> None:
        self.base, self.expert, self.scale = base, expert, float(scale)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        base = np.asarray(self.base(obs), np.float32)
        return compose_action(base, np.clip(self.expert(obs) - base, -self.scale, self.scale)).astype(np.float32)

    def reset(self, mask: np.ndarray) -> None:
        self.base.reset(mask)
        self.expert.reset(mask)


def residual_ceiling(task: str, base, scales: list[float], episodes: int, num_envs: int = 10,
                     seed: int = 0) -> dict[float, float]:
    """Success of `TowardExpert` per scale on the nominal mirror (the same episodes for every scale)."""
    import sim

    if not scales or min(scales) < 0:
        raise UserError(f"scales={scales}; give residual scales >= 0, e.g. scales=[0,0.05,0.1,0.2]")
    envs = sim.make_vec_env(task, num_envs, same_step_reset=True)
    out = {}
    try:
        for scale in scales:  # evaluate resets the envs with `seed`: every scale sees the same episodes
            policy = TowardExpert(load_base(base, task, num_envs), ExpertBase(task, num_envs), scale)
            out[float(scale)] = evaluate(envs, episodes, policy, obs_key=OBS_KEY, seed=seed)["success"]
    finally:
        envs.close()
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    base, _, _ = bench_base(cfg)
    scales = [float(s) for s in cfg.scales]
    ceiling = residual_ceiling(str(cfg.task), base, sorted({0.0, *scales}), int(cfg.episodes), int(cfg.num_envs),
                               int(cfg.seed))
    return {"task": str(cfg.task), "base": str(base), "episodes": int(cfg.episodes), "base_success": ceiling[0.0],
            "ceiling": {str(s): ceiling[s] for s in scales}}

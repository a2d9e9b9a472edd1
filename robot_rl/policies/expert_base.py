"""The mirror's scripted expert as a batched base policy, optionally off by a constant action bias.

A controlled base for the residual learner: `ExpertBase(bias=...)` fails for one known, state-independent reason
that a residual within `scale` can cancel, so a run on it separates "the learner cannot learn" from "this base's
failures are hard to correct" (a trained diffusion base fails in many state-dependent ways at once). Use it as
`robot-rl train-residual base=expert base_bias=[0.028,0,0,0]` or `robot-rl bench residual base.kind=expert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_rl.errors import UserError

EXPERT = "expert"


@dataclass(frozen=True)
class ExpertSpec:
    """`base=expert` in a config: the task's scripted expert plus `bias` (normalized action units, one per dim)."""

    bias: tuple[float, ...] = ()

    def __str__(self) -> str:
        return f"expert+bias{list(self.bias)}" if self.bias else EXPERT


class ExpertBase:
    """`__call__(obs)` -> one action per env (clip(expert + bias, -1, 1)); `reset(mask)` starts new episodes."""

    def __init__(self, task: str, num_envs: int, bias: Sequence[float] = (), seed: int = 0):
        import sim

        self.experts = [sim.make_expert(task, seed=seed + i) for i in range(num_envs)]
        action_dim = len(self.experts[0].low)
        self.bias = np.zeros(action_dim, np.float32) if not len(bias) else np.asarray(bias, np.float32)
        if self.bias.shape != (action_dim,):
            raise UserError(f"base_bias has {self.bias.size} values, {task} has {action_dim} action dims; give one "
                            "bias per action dim (normalized units), e.g. base_bias=[0.03,0,0,0]")

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        actions = np.stack([e.act({"state": s}) for e, s in zip(self.experts, obs["state"])])
        return np.clip(actions + self.bias, -1.0, 1.0).astype(np.float32)

    def reset(self, mask: np.ndarray) -> None:
        for expert, start in zip(self.experts, mask):
            if start:
                expert.reset()

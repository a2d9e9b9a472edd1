"""Simulated takeovers: a scripted expert plays the person with the teleop device while the learner trains in a mirror.

The rule is the one a supervisor follows on a robot: watch the policy's proposal, take over once it has drifted from
what you would do (`threshold`, max over action dims, normalized units) for `patience` steps in a row, then hand
control back after `hold` steps (0: keep it to the episode's end). While the expert acts, its action is executed and
recorded as `human_action` with `intervention` set, and the policy's proposal is kept as `policy_action`: exactly the
record of a real takeover, so the learner treats both alike (intervened steps are demo-side data; an optional RLIF
penalty marks the step that led to each takeover, see `robot_rl.rl.replay.takeover_rewards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.errors import UserError
from robot_rl.rl.loop import StatefulBase


@dataclass
class TakeoverConfig:
    enabled: bool = False
    threshold: float = 0.07  # drift: max |proposal - expert action| over action dims above this (normalized units)
    patience: int = 8  # ... for this many steps in a row starts a takeover
    hold: int = 10  # steps the expert keeps control before handing back (0: to the episode's end)

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.patience < 1 or self.hold < 0:
            raise UserError(f"takeover threshold={self.threshold}, patience={self.patience}, hold={self.hold}: need "
                            "threshold >= 0, patience >= 1 and hold >= 0 (0: the expert keeps control to the end)")


class DriftTakeover:
    """The takeover rule for a batch of envs; `__call__(proposal, expert_action)` -> who acts now, (num_envs,) bool."""

    def __init__(self, num_envs: int, threshold: float, patience: int, hold: int):
        self.threshold, self.patience, self.hold = threshold, patience, hold
        self.drift = np.zeros(num_envs, np.int64)  # consecutive drifting steps while the policy acts
        self.left = np.zeros(num_envs, np.int64)  # steps of the current takeover still to go (-1: to the end)

    def __call__(self, proposal: np.ndarray, expert_action: np.ndarray) -> np.ndarray:
        drifting = np.max(np.abs(np.asarray(proposal) - np.asarray(expert_action)), axis=-1) > self.threshold
        self.drift = np.where(drifting & (self.left == 0), self.drift + 1, 0)
        start = self.drift >= self.patience
        self.left = np.where(start, self.hold if self.hold > 0 else -1, self.left)
        self.drift[start] = 0
        taking = self.left != 0
        self.left = np.where(self.left > 0, self.left - 1, self.left)
        return taking

    def reset(self, mask: np.ndarray) -> None:
        """New episodes in the envs of `mask`: the policy acts first."""
        self.drift[mask] = 0
        self.left[mask] = 0


class ExpertTakeover:
    """A batched expert (`expert(obs)` -> (num_envs, A), `expert.reset(mask)`) supervising by `DriftTakeover`:
    `__call__(obs, proposal)` -> (human_action with NaN rows where the policy acts, intervention mask)."""

    def __init__(self, expert: StatefulBase, num_envs: int, cfg: TakeoverConfig):
        self.expert, self.rule = expert, DriftTakeover(num_envs, cfg.threshold, cfg.patience, cfg.hold)

    def __call__(self, obs: Any, proposal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        expert_action = np.asarray(self.expert(obs), np.float32)
        taking = self.rule(proposal, expert_action)
        return np.where(taking[:, None], expert_action, np.nan).astype(np.float32), taking

    def reset(self, mask: np.ndarray) -> None:
        if mask.any():
            self.expert.reset(mask)
            self.rule.reset(mask)

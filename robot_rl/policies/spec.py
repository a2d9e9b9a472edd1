"""What a base policy consumes and produces: the description every checkpoint carries.

Whoever runs a policy (the scheduler, `robot-rl evaluate`, the ROS actor, the residual learner) needs to know the
observation keys and shapes, the action dimension, the chunk length and the control rate without importing the
network code; the spec is that description, and the checks here turn every mismatch into a one-line `UserError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from robot_rl.errors import UserError

POLICY_KINDS = ("bc", "diffusion")


@dataclass(frozen=True)
class PolicySpec:
    """The interface of a base policy: obs keys (env keys, without the store's `obs/` prefix) and their shapes,
    action dimension, chunk horizon H, observation history length, the steps executed per chunk, rate and task."""

    obs_keys: tuple[str, ...]
    action_dim: int
    horizon: int
    n_obs_steps: int
    rate_hz: float
    task: str
    obs_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    n_action_steps: int = 8
    kind: str = "diffusion"

    def __post_init__(self) -> None:
        if set(self.obs_keys) != set(self.obs_shapes):
            raise UserError(f"policy spec: obs_keys {list(self.obs_keys)} do not match "
                            f"obs_shapes {list(self.obs_shapes)}")
        if self.kind not in POLICY_KINDS:
            raise UserError(f"policy kind {self.kind!r} is unknown; choose one of: {', '.join(POLICY_KINDS)}")
        if not 1 <= self.n_action_steps <= self.horizon:
            raise UserError(f"n_action_steps={self.n_action_steps} must be in [1, horizon={self.horizon}]")
        if self.n_obs_steps < 1 or self.action_dim < 1:
            raise UserError(f"n_obs_steps ({self.n_obs_steps}) and action_dim ({self.action_dim}) must be >= 1")

    def image_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.obs_keys if len(self.obs_shapes[k]) == 3)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["obs_keys"] = list(self.obs_keys)
        out["obs_shapes"] = {k: list(v) for k, v in self.obs_shapes.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySpec:
        data = dict(data)
        data["obs_keys"] = tuple(data["obs_keys"])
        data["obs_shapes"] = {k: tuple(int(d) for d in v) for k, v in data["obs_shapes"].items()}
        return cls(**data)

    def check_obs(self, obs: dict[str, np.ndarray]) -> None:
        """Raise a UserError naming the first missing key or wrong shape in one observation."""
        for key in self.obs_keys:
            if key not in obs:
                raise UserError(f"observation is missing key {key!r}; the policy needs {list(self.obs_keys)}")
            shape = tuple(np.shape(obs[key]))
            if shape != self.obs_shapes[key]:
                raise UserError(f"observation {key!r} has shape {shape}, the policy expects {self.obs_shapes[key]}")
            value = np.asarray(obs[key])
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise UserError(f"observation {key!r} contains NaN or inf")

    def check_matches(self, task: str | None = None, action_dim: int | None = None,
                      obs_shapes: dict[str, tuple[int, ...]] | None = None, source: str = "policy") -> None:
        """Raise a UserError when this policy was made for another task, action dimension or observation layout."""
        if task is not None and self.task and task != self.task:
            raise UserError(f"{source} was trained for task {self.task!r}, not {task!r}")
        if action_dim is not None and int(action_dim) != self.action_dim:
            raise UserError(f"{source} has action_dim {self.action_dim}, the environment needs {int(action_dim)}")
        if obs_shapes is not None:
            for key in self.obs_keys:
                if key not in obs_shapes:
                    raise UserError(f"{source} needs observation {key!r}; available: {sorted(obs_shapes)}")
                if tuple(obs_shapes[key]) != self.obs_shapes[key]:
                    raise UserError(f"{source} expects observation {key!r} of shape {self.obs_shapes[key]}, "
                                    f"the environment gives {tuple(obs_shapes[key])}")

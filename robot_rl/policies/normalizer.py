"""Per-key affine normalization whose statistics are buffers, so they travel inside the checkpoint's weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robot_rl.policies.spec import PolicySpec

MIN_STD = 1e-2  # a state dimension that barely moves in the demos must not be blown up into noise
MIN_RANGE = 1e-2


class Affine(nn.Module):
    """`normalize(x) = (x - offset) * scale`, broadcast over the trailing feature shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    def set(self, offset: np.ndarray, scale: np.ndarray) -> None:
        self.offset.copy_(torch.as_tensor(np.asarray(offset, dtype=np.float32)))
        self.scale.copy_(torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.offset) * self.scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale + self.offset


class Normalizer(nn.Module):
    """State observations to zero mean and unit std, images to [-1, 1], actions min-max to [-1, 1]: the range a
    diffusion denoiser clips its samples to."""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__()
        self.image_keys = spec.image_keys()
        # images are normalized per channel with fixed constants, so their buffers are scalars
        self.obs = nn.ModuleDict({k: Affine(() if k in self.image_keys else spec.obs_shapes[k]) for k in spec.obs_keys})
        self.action = Affine((spec.action_dim,))
        for key in self.image_keys:
            self.obs[key].set(np.float32(127.5), np.float32(1 / 127.5))

    def fit(self, obs: dict[str, np.ndarray], actions: np.ndarray) -> None:
        """Set statistics from training data: arrays with steps on axis 0."""
        for key, module in self.obs.items():
            if key in self.image_keys:
                continue
            values = np.asarray(obs[key], dtype=np.float64)
            module.set(values.mean(axis=0), 1.0 / np.maximum(values.std(axis=0), MIN_STD))
        low, high = actions.min(axis=0).astype(np.float64), actions.max(axis=0).astype(np.float64)
        centre, half_range = (high + low) / 2, np.maximum(high - low, MIN_RANGE) / 2
        self.action.set(centre, 1.0 / half_range)

    def normalize_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: self.obs[key].normalize(value) for key, value in obs.items()}

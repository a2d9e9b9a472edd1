"""Observation encoders: the normalized observation history of every key becomes one conditioning vector.

State vectors pass through unchanged (they are already normalized); each camera gets a small conv net ending in a
spatial softmax (expected keypoint coordinates), which keeps the feature small and the encoder fast on a CPU.
GroupNorm, not BatchNorm: the EMA weights and batch-size-1 inference must see the same statistics as training.
"""

from __future__ import annotations

import torch
from torch import nn

from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.spec import PolicySpec


def crop_size(image_shape: tuple[int, ...], ratio: float) -> tuple[int, int]:
    height, width = image_shape[:2]
    return max(8, round(height * ratio)), max(8, round(width * ratio))


def crop_images(images: torch.Tensor, size: tuple[int, int], random: bool) -> torch.Tensor:
    """Crop channel-last images (B, H, W, C): a random window per sample while training, the centre otherwise."""
    batch, height, width = images.shape[:3]
    ch, cw = size
    if not random:
        top, left = (height - ch) // 2, (width - cw) // 2
        return images[:, top:top + ch, left:left + cw]
    top = torch.randint(0, height - ch + 1, (batch,))
    left = torch.randint(0, width - cw + 1, (batch,))
    rows = (top[:, None] + torch.arange(ch))[:, :, None]
    cols = (left[:, None] + torch.arange(cw))[:, None, :]
    return images[torch.arange(batch)[:, None, None], rows, cols]


class SpatialSoftmax(nn.Module):
    """Per channel, the softmax-weighted mean pixel position: (B, C, h, w) -> (B, 2C) in [-1, 1]."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        weights = torch.softmax(features.reshape(batch, channels, height * width), dim=-1)
        ys = torch.linspace(-1, 1, height, device=features.device).repeat_interleave(width)
        xs = torch.linspace(-1, 1, width, device=features.device).repeat(height)
        return torch.cat([weights @ xs, weights @ ys], dim=-1)


class ImageEncoder(nn.Module):
    """A small strided conv net for one camera: (B, H, W, 3) normalized -> (B, feature_dim)."""

    def __init__(self, image_shape: tuple[int, ...], config: PolicyConfig) -> None:
        super().__init__()
        self.crop = crop_size(image_shape, config.image_crop_ratio)
        layers: list[nn.Module] = []
        in_channels = image_shape[2]
        for i, channels in enumerate(config.image_channels):
            stride = 1 if i == len(config.image_channels) - 1 else 2
            layers += [nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1),
                       nn.GroupNorm(min(8, channels), channels), nn.ReLU()]
            in_channels = channels
        self.conv = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax()
        self.out = nn.Linear(2 * in_channels, config.image_feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = crop_images(images, self.crop, random=self.training)
        return self.out(self.keypoints(self.conv(images.permute(0, 3, 1, 2))))


class ObsEncoder(nn.Module):
    """Normalized observation history {key: (B, n_obs, *shape)} -> one vector (B, n_obs * per-step features)."""

    def __init__(self, spec: PolicySpec, config: PolicyConfig) -> None:
        super().__init__()
        self.keys = spec.obs_keys
        self.images = nn.ModuleDict({k: ImageEncoder(spec.obs_shapes[k], config) for k in spec.image_keys()})
        per_step = sum(config.image_feature_dim if k in self.images else spec.obs_shapes[k][0] for k in self.keys)
        self.output_dim = per_step * spec.n_obs_steps

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key in self.keys:
            value = obs[key]
            batch, steps = value.shape[:2]
            if key in self.images:
                value = self.images[key](value.reshape(batch * steps, *value.shape[2:])).reshape(batch, steps, -1)
            parts.append(value)
        return torch.cat(parts, dim=-1).reshape(parts[0].shape[0], -1)

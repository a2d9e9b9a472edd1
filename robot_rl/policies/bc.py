"""BC-MLP head: the whole action chunk regressed in one forward pass: fast, deterministic, the baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPChunkHead(nn.Module):
    """Conditioning vector -> (B, H, action_dim) normalized actions, trained with mean squared error."""

    def __init__(self, cond_dim: int, horizon: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        layers: list[nn.Module] = []
        width = cond_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.Mish()]
            width = size
        layers.append(nn.Linear(width, horizon * action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond).reshape(-1, self.horizon, self.action_dim)

    def features(self, cond: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (before the linear action layer): what out-of-distribution scores look at."""
        return self.net[:-1](cond)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.mse_loss(self(cond), actions)

    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(cond).clamp(-1.0, 1.0)

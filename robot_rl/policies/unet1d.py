"""A 1-D temporal U-Net over the action chunk, conditioned by FiLM on the observation and the diffusion step.

Convolutions run along the chunk's time axis, so neighbouring actions are denoised together (smooth chunks); every
residual block gets a per-channel scale and bias from the conditioning vector (FiLM), the design of Chi et al.'s
Diffusion Policy, sized down for a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robot_rl.errors import UserError


class StepEmbedding(nn.Module):
    """Integer diffusion step -> sinusoidal features -> MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device) / (half - 1))
        angles = steps.float()[:, None] * freqs[None, :]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, out_channels), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class FiLMResBlock(nn.Module):
    """Two conv blocks; a per-channel scale and bias (FiLM, computed by the U-Net) modulate the first one's output."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.first = ConvBlock(in_channels, out_channels, kernel_size, n_groups)
        self.second = ConvBlock(out_channels, out_channels, kernel_size, n_groups)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.second(torch.addcmul(bias, self.first(x), scale)) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """(B, H, action_dim) noisy chunk, (B,) steps, (B, obs_dim) conditioning -> (B, H, action_dim) prediction.

    Every block's FiLM parameters come from one linear map of the conditioning vector (the same maths as one linear
    map per block, in one matrix product), and `film` is separate from `denoise`: a DDIM sampler computes the
    parameters of all its steps in one batched call, so each denoising step is only the convolutions. On a CPU with
    a batch of one, the number of operations, not their size, sets the latency.
    """

    def __init__(self, action_dim: int, horizon: int, obs_dim: int, down_dims: tuple[int, ...], kernel_size: int,
                 n_groups: int, step_embed_dim: int) -> None:
        super().__init__()
        factor = 2 ** (len(down_dims) - 1)
        if horizon % factor:
            raise UserError(f"horizon {horizon} must be a multiple of {factor} for down_dims {list(down_dims)}")
        self.step_embedding = StepEmbedding(step_embed_dim)
        block = lambda cin, cout: FiLMResBlock(cin, cout, kernel_size, n_groups)
        pairs = list(zip((action_dim, *down_dims[:-1]), down_dims))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(pairs):
            last = i == len(pairs) - 1
            resample = nn.Identity() if last else nn.Conv1d(cout, cout, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([block(cin, cout), block(cout, cout), resample]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for cin, cout in reversed(pairs[1:]):  # one upsampling per downsampling
            upsample = nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([block(2 * cout, cin), block(cin, cin), upsample]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))
        blocks = [m for m in self.modules() if isinstance(m, FiLMResBlock)]  # registration order = call order
        self.film_sizes = [size for b in blocks for size in (b.out_channels, b.out_channels)]
        self.film_proj = nn.Sequential(nn.Mish(), nn.Linear(step_embed_dim + obs_dim, sum(self.film_sizes)))

    def film(self, steps: torch.Tensor, obs_cond: torch.Tensor) -> torch.Tensor:
        """FiLM parameters (B, sum of 2 x channels, 1) of every block, for diffusion steps (B,) and obs (B, obs_dim)."""
        return self.film_proj(torch.cat([self.step_embedding(steps), obs_cond], dim=-1)).unsqueeze(-1)

    def forward(self, sample: torch.Tensor, steps: torch.Tensor, obs_cond: torch.Tensor) -> torch.Tensor:
        return self.denoise(sample, self.film(steps, obs_cond))

    def denoise(self, sample: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """The U-Net pass for a noisy chunk (B, H, action_dim) given precomputed FiLM parameters."""
        params = iter(film.split(self.film_sizes, dim=1))
        x = sample.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            x = second(first(x, next(params), next(params)), next(params), next(params))
            skips.append(x)
            x = downsample(x)
        for mid in self.mid:
            x = mid(x, next(params), next(params))
        for first, second, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(second(first(x, next(params), next(params)), next(params), next(params)))
        return self.final(x).transpose(1, 2)

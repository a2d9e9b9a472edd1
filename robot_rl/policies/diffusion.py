"""Diffusion head: DDPM training and deterministic DDIM sampling in a few steps.

Training uses all `train_timesteps` noise levels of a squared-cosine schedule; the denoiser predicts either the added
noise ("epsilon", DDPM's parameterization) or the clean chunk ("sample"). Inference walks `ddim_steps` of the levels
("trailing" spacing, so the first step starts from pure noise) with eta = 0, clipping the predicted clean chunk to
[-1, 1], the range the normalizer maps actions to. Fewer steps trade sample quality for latency without retraining.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.errors import UserError
from robot_rl.policies.unet1d import ConditionalUnet1D


def cosine_alphas_cumprod(timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative signal fractions of the squared-cosine schedule (Nichol & Dhariwal), float64 for accuracy."""
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), max_beta) for i in range(timesteps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


def ddim_timesteps(train_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced steps ending at the noisiest one: e.g. 100 train steps, 10 DDIM steps -> 99, 89, ..., 9."""
    if not 1 <= steps <= train_timesteps:
        raise UserError(f"ddim_steps={steps} must be in [1, train_timesteps={train_timesteps}]")
    ratio = train_timesteps / steps
    return [round(train_timesteps - i * ratio) - 1 for i in range(steps)]


PREDICTIONS = ("epsilon", "sample")


class DiffusionHead(nn.Module):
    """Denoises a (B, H, action_dim) chunk of normalized actions conditioned on the observation features."""

    def __init__(self, cond_dim: int, horizon: int, action_dim: int, down_dims: tuple[int, ...], kernel_size: int,
                 n_groups: int, step_embed_dim: int, train_timesteps: int, ddim_steps: int,
                 prediction: str = "epsilon") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise UserError(f"diffusion prediction {prediction!r} is unknown; choose one of: {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        self.horizon, self.action_dim = horizon, action_dim
        self.train_timesteps = train_timesteps
        self.ddim_steps = ddim_steps
        self.denoiser = ConditionalUnet1D(action_dim, horizon, cond_dim, down_dims, kernel_size, n_groups,
                                          step_embed_dim)
        # a schedule is a function of the config, not a weight: kept out of the checkpoint
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(train_timesteps).float(), persistent=False)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM objective: noise the chunk to a random level, predict the noise (epsilon) or the clean chunk."""
        batch = actions.shape[0]
        steps = torch.randint(0, self.train_timesteps, (batch,), generator=generator)
        noise = torch.randn(actions.shape, generator=generator)
        signal = self.alphas_cumprod[steps].sqrt()[:, None, None]
        sigma = (1 - self.alphas_cumprod[steps]).sqrt()[:, None, None]
        target = noise if self.prediction == "epsilon" else actions
        return F.mse_loss(self.denoiser(signal * actions + sigma * noise, steps, cond), target)

    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from Gaussian noise to a clean chunk in `self.ddim_steps` denoiser calls."""
        batch = cond.shape[0]
        timesteps = ddim_timesteps(self.train_timesteps, self.ddim_steps)
        # FiLM parameters of every step in one batched call: the loop below is only the U-Net convolutions
        steps = torch.tensor(timesteps, dtype=torch.long).repeat_interleave(batch)
        films = self.denoiser.film(steps, cond.repeat(len(timesteps), 1)).unflatten(0, (len(timesteps), batch))
        alphas = self.alphas_cumprod.double().tolist() + [1.0]  # index -1: the clean end of the chain
        x = torch.randn((batch, self.horizon, self.action_dim), generator=generator)
        for i, t in enumerate(timesteps):
            alpha, alpha_prev = alphas[t], alphas[timesteps[i + 1] if i + 1 < len(timesteps) else -1]
            out = self.denoiser.denoise(x, films[i])
            if self.prediction == "epsilon":
                clean = torch.add(x, out, alpha=-math.sqrt(1 - alpha)).mul_(1 / math.sqrt(alpha)).clamp_(-1.0, 1.0)
            else:
                clean = out.clamp(-1.0, 1.0)
            # x_prev = sqrt(alpha_prev) * clean + sqrt(1 - alpha_prev) * eps', with eps' the noise consistent with
            # the clipped estimate: eps' = (x - sqrt(alpha) * clean) / sqrt(1 - alpha)
            keep = math.sqrt(1 - alpha_prev) / math.sqrt(1 - alpha)
            x = torch.add(x.mul(keep), clean, alpha=math.sqrt(alpha_prev) - keep * math.sqrt(alpha))
        return x.clamp(-1.0, 1.0)

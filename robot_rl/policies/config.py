"""Architecture and interface settings of a base policy (`configs/policy/*.yaml`), stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from robot_rl.errors import UserError


@dataclass(frozen=True)
class PolicyConfig:
    """Everything needed to rebuild the network; checkpoints store it so loading never runs user code.

    The defaults are `configs/policy/diffusion.yaml`; `PolicyConfig(kind="bc")` is `configs/policy/bc.yaml`.
    """

    kind: str = "diffusion"  # "bc" (MLP, deterministic) or "diffusion" (1-D temporal U-Net denoiser)
    obs_keys: tuple[str, ...] = ("state",)
    horizon: int = 16  # H: actions per predicted chunk
    n_obs_steps: int = 2  # observation history fed to the network
    n_action_steps: int = 8  # actions executed from a chunk before the next one takes over
    # observation encoder
    image_feature_dim: int = 64
    image_channels: tuple[int, ...] = (32, 64, 64)
    image_crop_ratio: float = 0.9  # random crop while training, centre crop at inference
    # BC-MLP
    mlp_hidden: tuple[int, ...] = (256, 256, 256)
    # diffusion
    down_dims: tuple[int, ...] = (64, 128)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 64
    train_timesteps: int = 100
    ddim_steps: int = 10
    prediction: str = "epsilon"  # what the denoiser predicts: "epsilon" (the noise) or "sample" (the clean chunk)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Build from a plain dict (Hydra or JSON); unknown keys are a UserError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown policy setting(s) {unknown}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in data.items()}
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

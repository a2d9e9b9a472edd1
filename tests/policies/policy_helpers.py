"""Helpers for the policy tests: tiny real episode stores: a 2-D point mass driven to a goal by a scripted expert.

The store is the real zarr store written through its API; only the task is synthetic, because a policy test needs
a few hundred steps of consistent demos in milliseconds, not a physics simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_rl.data import EpisodeStore, make_step_schema
from robot_rl.policies import PolicyConfig
from robot_rl.policies.training import TrainConfig

STATE_DIM, ACTION_DIM, IMAGE_SIZE = 4, 2, 16
TASK = "PointReach"


def point_image(pos: np.ndarray) -> np.ndarray:
    """A 16x16 RGB frame with the point drawn as a bright 2x2 square."""
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    row, col = np.clip(((pos + 1) / 2 * (IMAGE_SIZE - 2)).astype(int), 0, IMAGE_SIZE - 2)
    image[row:row + 2, col:col + 2] = 255
    return image


def write_point_store(root: Path, episodes: int = 12, length: int = 24, seed: int = 0, images: bool = False,
                      task: str = TASK) -> Path:
    """Scripted demos: state = (position, goal), action = clip(2 * (goal - position)), position += 0.1 * action."""
    rng = np.random.default_rng(seed)
    obs_spec = {"state": ((STATE_DIM,), "float32")}
    if images:
        obs_spec["image_front"] = ((IMAGE_SIZE, IMAGE_SIZE, 3), "uint8")
    store = EpisodeStore.create(root, make_step_schema(obs_spec, ACTION_DIM))
    nan = np.full(ACTION_DIM, np.nan, np.float32)
    with store.writer() as writer:
        for _ in range(episodes):
            pos, goal = rng.uniform(-0.8, 0.8, 2), rng.uniform(-0.8, 0.8, 2)
            for t in range(length):
                action = np.clip(2.0 * (goal - pos) + rng.normal(0, 0.02, 2), -1, 1).astype(np.float32)
                step = {"obs/state": np.concatenate([pos, goal]).astype(np.float32), "action": action,
                        "policy_action": action, "base_action": action, "residual_action": np.zeros_like(action),
                        "human_action": nan, "intervention": False, "reward": np.float32(0.0),
                        "terminated": False, "truncated": t == length - 1, "timestamp": float(t) / 20}
                if images:
                    step["obs/image_front"] = point_image(pos)
                writer.add_step(step)
                pos = pos + 0.1 * action
            writer.end_episode(success=bool(np.linalg.norm(goal - pos) < 0.1), source="scripted", task=task)
    store.close()
    return root


def tiny_policy(kind: str = "diffusion", **overrides) -> PolicyConfig:
    """A network small enough to train in seconds, same code paths as the default one."""
    base = dict(kind=kind, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32), n_groups=4,
                step_embed_dim=16, mlp_hidden=(64, 64), image_channels=(8, 16), image_feature_dim=16, ddim_steps=5,
                train_timesteps=50)
    return PolicyConfig(**{**base, **overrides})


def tiny_train(**overrides) -> TrainConfig:
    base = dict(steps=60, batch_size=32, lr=3e-3, warmup_steps=5, val_every=30, ckpt_every=30, val_fraction=0.25,
                val_samples=64, seed=0)
    return TrainConfig(**{**base, **overrides})

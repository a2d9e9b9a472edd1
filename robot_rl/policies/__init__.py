"""Base policies in PyTorch: BC-MLP and diffusion with action chunks, checkpoint I/O, chunk scheduling.

`load_policy(path)` returns a `ChunkPolicy` (`reset()`, `act(obs) -> (H, action_dim)` chunk, `.spec`);
`ChunkScheduler(policy, mode=...)` turns its chunks into one action per control step.
"""

from robot_rl.policies.checkpoint import load_policy, read_policy_header, save_policy
from robot_rl.policies.chunk_scheduler import ChunkScheduler
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.policy import ChunkPolicy, PolicyModel
from robot_rl.policies.spec import PolicySpec
from robot_rl.policies.training import TrainConfig, TrainResult, train_policy

__all__ = ["ChunkPolicy", "ChunkScheduler", "PolicyConfig", "PolicyModel", "PolicySpec", "TrainConfig",
           "TrainResult", "load_policy", "read_policy_header", "save_policy", "train_policy"]

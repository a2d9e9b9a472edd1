"""A base policy: the network (`PolicyModel`) and the runtime around it (`ChunkPolicy`: history, reset, act).

`ChunkPolicy.act(obs)` is the contract everyone else uses: it appends one observation to the history of the last
`n_obs_steps` observations and returns a chunk (H, action_dim) in the environment's normalized action units. The
scheduler splits it into `observe` (every control step, cheap) and `predict` (on a snapshot of the history, possibly
in a worker thread), so history bookkeeping never waits on inference.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from robot_rl.policies.bc import MLPChunkHead
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.diffusion import DiffusionHead
from robot_rl.policies.encoders import ObsEncoder
from robot_rl.policies.normalizer import Normalizer
from robot_rl.policies.spec import PolicySpec


class PolicyModel(nn.Module):
    """Normalizer + observation encoder + chunk head (BC-MLP or diffusion); inputs and outputs in raw units."""

    def __init__(self, spec: PolicySpec, config: PolicyConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.normalizer = Normalizer(spec)
        self.encoder = ObsEncoder(spec, config)
        cond_dim = self.encoder.output_dim
        if spec.kind == "bc":
            self.head: nn.Module = MLPChunkHead(cond_dim, spec.horizon, spec.action_dim, config.mlp_hidden)
        else:
            self.head = DiffusionHead(cond_dim, spec.horizon, spec.action_dim, config.down_dims, config.kernel_size,
                                      config.n_groups, config.step_embed_dim, config.train_timesteps,
                                      config.ddim_steps, config.prediction)

    def condition(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(self.normalizer.normalize_obs(obs))

    def loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss on a batch: obs {key: (B, n_obs, *shape)}, actions (B, H, action_dim) in raw units."""
        return self.head.loss(self.condition(obs), self.normalizer.action.normalize(actions), generator)

    def sample(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Predicted chunks (B, H, action_dim) in raw action units."""
        return self.normalizer.action.unnormalize(self.head.sample(self.condition(obs), generator))

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, feature_dim): the representation the action head reads, for out-of-distribution scores.

        BC-MLP: its last hidden layer. Diffusion: the observation conditioning (its head also sees noise and a step).
        """
        cond = self.condition(obs)
        return self.head.features(cond) if isinstance(self.head, MLPChunkHead) else cond


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with `count` torch intra-op threads, then restore the previous setting (a process-wide knob)."""
    previous = torch.get_num_threads()
    if count > 0 and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class ChunkPolicy:
    """The runtime policy: observation history, seeded sampling noise, `act(obs) -> (H, action_dim)` chunk.

    Inference runs with `threads` torch threads (default 1): a batch of one chunk gains nothing from intra-op
    parallelism on a small CPU, and a second thread would compete with the control loop and the simulator.
    """

    def __init__(self, model: PolicyModel, seed: int = 0, threads: int = 1) -> None:
        self.model = model.eval()
        self.spec: PolicySpec = model.spec
        self.config: PolicyConfig = model.config
        self.seed = seed
        self.threads = threads
        self.checkpoint: str | None = None  # the file it was loaded from (`load_policy`): a child process reloads it
        self.generator = torch.Generator()
        self.history: deque[dict[str, np.ndarray]] = deque(maxlen=self.spec.n_obs_steps)
        self.reset()

    @property
    def ddim_steps(self) -> int:
        return getattr(self.model.head, "ddim_steps", 0)

    @ddim_steps.setter
    def ddim_steps(self, steps: int) -> None:
        if hasattr(self.model.head, "ddim_steps"):
            self.model.head.ddim_steps = int(steps)

    def reset(self, seed: int | None = None) -> None:
        """Forget the history and restart the sampling noise, so an episode's actions depend only on its obs."""
        self.history.clear()
        self.generator.manual_seed(self.seed if seed is None else seed)

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        """Validate one observation and append (a copy of) it to the history."""
        self.spec.check_obs(obs)
        self.history.append({k: np.array(obs[k], copy=True) for k in self.spec.obs_keys})

    def obs_history(self) -> dict[str, np.ndarray]:
        """The last `n_obs_steps` observations stacked on axis 0; the oldest repeats until the history is full."""
        if not self.history:
            raise RuntimeError("no observation yet: call observe(obs) or act(obs) first")
        steps = [self.history[0]] * (self.spec.n_obs_steps - len(self.history)) + list(self.history)
        return {k: np.stack([s[k] for s in steps]) for k in self.spec.obs_keys}

    def predict(self, obs_history: dict[str, np.ndarray]) -> np.ndarray:
        """A chunk (H, action_dim), float32 in [-1, 1], from a stacked observation history."""
        return self.predict_batch({k: np.asarray(v)[None] for k, v in obs_history.items()})[0]

    def predict_batch(self, obs_histories: dict[str, np.ndarray],
                      generator: torch.Generator | None = None) -> np.ndarray:
        """Chunks (B, H, action_dim) from B stacked histories (B, n_obs_steps, ...): one forward pass for B envs.
        `generator` (default: the policy's own) draws the sampling noise: callers sharing one policy keep their own."""
        with torch.inference_mode(), torch_threads(self.threads):
            obs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in obs_histories.items()}
            chunks = self.model.sample(obs, self.generator if generator is None else generator)
        return chunks.clamp(-1.0, 1.0).numpy().astype(np.float32)

    def warm_up(self) -> None:
        """One inference on zeros, then a fresh episode: the first inference allocates and is slow, so a control loop
        runs it before its first step."""
        self.observe({k: np.zeros(shape, np.uint8 if len(shape) == 3 else np.float32)
                      for k, shape in self.spec.obs_shapes.items()})
        self.predict(self.obs_history())
        self.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.observe(obs)
        return self.predict(self.obs_history())

    def features(self, obs_batch: dict[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """Features (N, feature_dim) of a batch of stacked observation histories {key: (N, n_obs_steps, *shape)}."""
        keys = list(self.spec.obs_keys)
        count = len(obs_batch[keys[0]])
        parts = []
        with torch.inference_mode(), torch_threads(self.threads):
            for start in range(0, count, batch_size):
                obs = {k: torch.from_numpy(np.ascontiguousarray(obs_batch[k][start:start + batch_size])) for k in keys}
                parts.append(self.model.features(obs).float().numpy())
        return np.concatenate(parts)

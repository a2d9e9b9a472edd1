"""Value-guided steering (V-GPS): sample K chunks from a stochastic base policy, execute the one the critic prefers.

The critic is a fitted chunked-TD evaluator. Scores are the pessimistic (minimum over heads) Q, so steering prefers
chunks every head agrees are good, and never chases one head's optimism. `temperature = 0` takes the argmax;
`temperature > 0` samples from softmax(Q / temperature).

`keep` scores only the `keep` samples nearest the K samples' mean (the base's typical chunks). The critic is least
reliable on outlying chunks, and an argmax over K noisy estimates picks the most extrapolated one: on the OPE bench's
PushCube base the unpruned argmax's distance rank among 16 samples averaged 11.2 of 0-15 (7.5 by chance), and
steering lost success (README, "Measured figures").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robot_rl.errors import UserError
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, latest_step


class SteeredPolicy:
    """Wraps `sample(obs_batch) -> chunks (B, H', A)` (a stochastic policy) into a value-steered policy."""

    def __init__(self, sample: Callable[[dict[str, np.ndarray]], np.ndarray], evaluator: ChunkedTDEvaluator,
                 k: int = 16, temperature: float = 0.0, keep: int | None = None, seed: int = 0):
        if k < 1:
            raise UserError(f"steering needs k >= 1 sampled chunks, got {k}")
        if evaluator.cfg.time_limit is not None:
            raise UserError("steering scores chunks without their episode step: fit its critic with "
                            "evaluator.time_limit=null")
        if keep is not None and not 1 <= keep <= k:
            raise UserError(f"steering keep={keep} must be between 1 and k={k} (or null to score every sample)")
        self.sample, self.evaluator, self.k, self.temperature = sample, evaluator, k, temperature
        self.keep = k if keep is None else keep
        self.n_obs_steps = int(getattr(sample, "n_obs_steps", 1))  # histories pass through to the sampler
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Chunks (B, H', A) for observations {key: (B, d)} or histories {key: (B, n, d)} (scored at the latest);
        with a critic that reads cameras, `obs` holds its images too ({"image_<cam>": (B, [n,] H, W, 3)})."""
        critic = self.evaluator
        name = critic.state_name
        batch = len(obs[name])
        repeated = {key: np.repeat(value, self.k, axis=0) for key, value in obs.items()}
        chunks = np.asarray(self.sample(repeated))  # (B * K, H', A), the K samples of each state in a row
        H = critic.cfg.horizon
        inputs = latest_step(repeated[name], 1)
        if critic.image_keys:
            inputs = {name: inputs, **{k: latest_step(repeated[k], 3) for k in critic.image_names}}
        window = chunks[:, :H]  # the part the critic scores
        scores = critic.q_values(inputs, window).min(axis=0).reshape(batch, self.k)
        if self.keep < self.k:
            flat = window.reshape(batch, self.k, -1)
            distance = np.linalg.norm(flat - flat.mean(axis=1, keepdims=True), axis=2)
            outlying = np.argsort(distance, axis=1)[:, self.keep:]
            np.put_along_axis(scores, outlying, -np.inf, axis=1)
        if self.temperature > 0:
            logits = (scores - scores.max(axis=1, keepdims=True)) / self.temperature
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            pick = np.array([self.rng.choice(self.k, p=p) for p in probs])
        else:
            pick = scores.argmax(axis=1)
        return chunks.reshape(batch, self.k, *chunks.shape[1:])[np.arange(batch), pick]

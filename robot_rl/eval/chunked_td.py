"""Chunked-TD policy evaluation: an ensemble critic over (observation, action chunk), trained from mixed logged data.

Q(s_t, a_{t:t+H}) regresses onto `sum_{k<H} gamma^k r_{t+k} + gamma^H * mask * Qbar(s_{t+H}, pi(s_{t+H}))`, where
pi(s) is the chunk the evaluated policy proposes (Q-chunking / ALOE). Windows never cross an episode end (the
ChunkSampler's contract). With horizon H = 1 this is exactly per-step FQE, which is how the FQE baseline runs: one
implementation for both, so a comparison isolates the chunking.

Design choices, and why:
- The evaluated policy is any callable on NumPy observations returning chunks. It runs once per logged state before
  training (its chunks are looked up by slot afterwards), so a slow diffusion policy costs one pass, not one per batch.
- Each ensemble head bootstraps from its own target head: the heads stay diverse, so their spread measures the
  uncertainty of the estimate. The value is the mean over heads; the pessimistic value is the minimum over heads.
- Targets are clipped to [min(r, 0), max(r, 0)] / (1 - gamma), as FQE does, so divergence cannot run away.
- `time_limit` T (the step limit the logged episodes ran under): an episode cut at T ends there, and the critic sees
  the step as t / T, so values are returns within the limit, as the true values and a deployment's budget count
  them. Without it the last windows of a timed-out episode bootstrap past the limit from states that look like
  ones other episodes still finished from, which overvalues every candidate (on `bench ope`'s data with 30 logged
  episodes per candidate, most of which time out: by +0.14 on average, +0.005 with the limit).
- `proximity` sigma: windows are drawn with weight exp(-d^2 / (2 sigma^2)) + 0.01, d^2 the mean squared difference
  between the window's logged chunk and the chunk the evaluated policy proposes at its start (instead of the group
  mix). The critic is then fitted mostly where the data did what the policy would do, and bootstraps Q(s, pi(s))
  near data rather than extrapolating in the chunk: a critic fitted on all windows alike is nearly blind to the
  chunk, and values every candidate near the data's average.
- The critic is the residual learner's network (bounded norms, vmapped ensemble); all updates of one call run in one
  jitted `lax.scan`.
- Camera images (`encoder.image_keys`, store keys such as "obs/image_front") go through the residual learner's encoder
  design (`robot_rl.rl.encoder`): a small conv encoder per camera in front of the ensemble, trained by the TD loss,
  an EMA copy in the target, every training image randomly shifted by up to `encoder.shift` pixels (never when
  valuing). Critic inputs and policy inputs are then dicts {"state": ..., "image_front": ...}, as the sim mirrors
  name them; the evaluated policy gets the images too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robot_rl.data import ChunkSampler, ReplayCache
from robot_rl.errors import UserError
from robot_rl.eval.blend import discounted_return
from robot_rl.rl.config import EncoderConfig
from robot_rl.rl.encoder import STATE, PixelCritic, random_shift
from robot_rl.rl.layers import project_params
from robot_rl.rl.networks import CriticEnsemble

PROXIMITY_FLOOR = 0.01  # weight every window keeps, so no part of the data is ever dropped
PolicyFn = Callable[[dict[str, np.ndarray]], np.ndarray]  # {"state": (B, d), ...} -> chunks (B, H', A)
IMAGE_BATCH_BYTES = 256 * 2**20  # images stacked for one jitted call of updates at most (obs and next obs together)


@dataclass
class EvaluatorConfig:
    horizon: int = 5
    gamma: float = 0.99
    num_critics: int = 4
    hidden_dim: int = 256
    num_blocks: int = 1
    expansion: int = 4
    bounded: bool = True
    lr: float = 3e-4
    max_grad_norm: float = 1.0
    tau: float = 0.005
    batch_size: int = 256
    updates: int = 4000
    updates_per_call: int = 100
    fractions: dict[str, float] = field(default_factory=lambda: {"demo": 0.5, "online": 0.5})
    obs_key: str = "obs/state"
    time_limit: int | None = None  # steps per episode the data ran under (the task's limit); None: no limit
    proximity: float | None = None  # sigma of the policy-proximity window weights; None: windows by group fractions
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # cameras (store keys "obs/image_<camera>")
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):  # from a config file
            unknown = sorted(set(self.encoder) - {f.name for f in fields(EncoderConfig)})
            if unknown:
                raise UserError(f"unknown evaluator.encoder setting(s) {unknown}; known: "
                                f"{[f.name for f in fields(EncoderConfig)]}")
            self.encoder = EncoderConfig(**self.encoder)


@dataclass
class PolicyEstimate:
    """What the evaluator says about one policy."""

    value: float  # mean over heads of the mean over initial states of Q(s0, pi(s0))
    pessimistic: float  # minimum over heads
    spread: float  # standard deviation over heads
    initial_values: np.ndarray  # (num_initial_states,) per-state values, mean over heads
    losses: list[float]


def td_target(reward, discount, next_q, lo: float, hi: float):
    """The chunk target: `reward` is sum_{k<H} gamma^k r_{t+k} over the window's valid steps, `discount` is gamma^H
    when s_{t+H} exists in the episode and 0 when the episode terminated inside the window; clipped to [lo, hi]."""
    return jnp.clip(reward + discount * next_q, lo, hi)


class ChunkedTDEvaluator:
    """Fits one critic per evaluated policy on a replay cache and reports the policy's value."""

    def __init__(self, cfg: EvaluatorConfig, cache: ReplayCache):
        if cfg.obs_key not in cache.spec or "action" not in cache.spec:
            raise UserError(f"the evaluator needs {cfg.obs_key!r} and 'action' in the replay cache")
        self.image_keys = tuple(cfg.encoder.image_keys)
        missing = [k for k in self.image_keys if k not in cache.spec]
        if missing:
            raise UserError(f"evaluator.encoder.image_keys {missing} are not in the replay cache (its keys: "
                            f"{sorted(cache.spec)}); load them from the store or drop them")
        self.state_name = cfg.obs_key.removeprefix("obs/")
        self.image_names = tuple(k.removeprefix("obs/") for k in self.image_keys)  # as policies and mirrors name them
        if cfg.proximity is not None and cfg.proximity <= 0:
            raise UserError(f"evaluator.proximity must be a positive sigma (or null), got {cfg.proximity}")
        if cfg.time_limit is not None and cfg.time_limit < 1:
            raise UserError(f"evaluator.time_limit must be a positive number of steps (or null), got {cfg.time_limit}")
        self.cfg, self.cache = cfg, cache
        self.obs_dim = int(np.prod(cache.spec[cfg.obs_key][0])) + (cfg.time_limit is not None)
        self.action_dim = int(np.prod(cache.spec["action"][0]))
        valid = np.flatnonzero(cache.valid)
        if valid.size == 0:
            raise UserError("the replay cache is empty: sync it from an episode store first")
        obs = cache.data[cfg.obs_key][valid].reshape(len(valid), -1)
        self.obs_mean, self.obs_std = obs.mean(0), obs.std(0) + 1e-3  # of the state; the time feature is t / T
        rewards = cache.data["reward"][valid]
        scale = 1.0 / (1.0 - cfg.gamma)
        self.target_range = (min(float(rewards.min()), 0.0) * scale, max(float(rewards.max()), 0.0) * scale)
        if self.image_keys:
            enc = cfg.encoder
            self.network = PixelCritic(self.image_names, tuple(enc.channels), enc.feature_dim, cfg.num_critics,
                                       cfg.hidden_dim, cfg.num_blocks, cfg.expansion, cfg.bounded)
        else:
            self.network = CriticEnsemble(cfg.num_critics, cfg.hidden_dim, cfg.num_blocks, cfg.expansion, cfg.bounded)
        self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
        self._train = jax.jit(self._train_impl)
        self._q = jax.jit(self._apply)

    def _apply(self, params, obs, chunk) -> jax.Array:
        """(E, B) values; with cameras the encoder runs first."""
        if self.image_keys:
            return self.network.apply(params, obs, chunk, method=PixelCritic.initialize)
        return self.network.apply(params, obs, chunk)

    # ---------------------------------------------------------------- inputs
    def observation(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """What the cache holds at `slots` as policies and `q_values` read it: {"state": ..., "image_<cam>": ...}."""
        keys = (self.cfg.obs_key, *self.image_keys)
        return {name: self.cache.data[key][slots] for name, key in zip((self.state_name, *self.image_names), keys)}

    def _obs(self, slots: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        return self._features(self.observation(slots), self.cache.step[slots])

    def _features(self, obs: np.ndarray | dict[str, np.ndarray],
                  steps: np.ndarray | None) -> np.ndarray | dict[str, np.ndarray]:
        """The critic's input: the standardized state, and with a time limit the step as a fraction of it; with
        cameras a dict of that and the uint8 images. `obs`: the state (B, d), or a dict with the state and images."""
        images = {}
        if isinstance(obs, dict):
            missing = [k for k in (self.state_name, *self.image_names) if k not in obs]
            if missing:
                raise UserError(f"observations lack {missing} that this critic reads; give "
                                f"{[self.state_name, *self.image_names]}")
            images = {k: np.asarray(obs[k], np.uint8) for k in self.image_names}
            obs = obs[self.state_name]
        elif self.image_keys:
            raise UserError(f"this critic reads cameras {list(self.image_names)}: pass observations as a dict "
                            f"{{{self.state_name!r}: ..., {self.image_names[0]!r}: ...}}")
        obs = (np.asarray(obs, np.float32).reshape(len(obs), -1) - self.obs_mean) / self.obs_std
        if self.cfg.time_limit is not None:
            if steps is None:
                raise UserError("this critic was fitted with evaluator.time_limit: pass the step of each "
                                "observation in its episode (steps=...)")
            obs = np.concatenate([obs, (np.asarray(steps, np.float32) / self.cfg.time_limit)[:, None]], axis=1)
        obs = obs.astype(np.float32)
        return {STATE: obs, **images} if self.image_keys else obs

    def history_slots(self, slots: np.ndarray, n: int) -> np.ndarray:
        """(len(slots), n) slots of the last n steps up to each slot, oldest first, never before its episode's start
        (the first state repeats, as a policy's history does at an episode's start)."""
        first = slots - self.cache.step[slots]
        return np.maximum(slots[:, None] - np.arange(n - 1, -1, -1), first[:, None])

    def policy_chunks(self, policy: PolicyFn, slots: np.ndarray, batch: int = 4096) -> np.ndarray:
        """The first H actions the policy proposes at each slot's observation, flattened: (len(slots), H * A).

        A policy with an attribute `n_obs_steps` = n > 1 gets each slot's last n observations, (B, n, *shape)."""
        H, out = self.cfg.horizon, []
        n_obs = int(getattr(policy, "n_obs_steps", 1))
        for start in range(0, len(slots), batch):
            part = slots[start:start + batch]
            rows = self.history_slots(part, n_obs) if n_obs > 1 else part
            chunk = np.asarray(policy(self.observation(rows)), dtype=np.float32)
            if chunk.ndim != 3 or chunk.shape[0] != len(part) or chunk.shape[2] != self.action_dim \
                    or chunk.shape[1] < H:
                raise UserError(f"the evaluated policy returned chunks of shape {chunk.shape}; expected "
                                f"({len(part)}, >= {H}, {self.action_dim})")
            out.append(chunk[:, :H].reshape(len(part), -1))
        return np.concatenate(out) if out else np.zeros((0, H * self.action_dim), np.float32)

    # ---------------------------------------------------------------- training
    def augment(self, obs: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """Every image of a training batch shifted by up to `encoder.shift` pixels (DrQ), as the learner does."""
        keys = jax.random.split(key, len(self.image_names))
        return {**obs, **{k: random_shift(obs[k], kk, self.cfg.encoder.shift) for k, kk in zip(self.image_names, keys)}}

    def _train_impl(self, params, target, opt_state, batches, key):
        lo, hi = self.target_range
        tau = self.cfg.tau

        def step(carry, mb):
            params, target, opt_state, key = carry
            if self.image_keys:
                key, k_obs, k_next = jax.random.split(key, 3)
                mb = {**mb, "obs": self.augment(mb["obs"], k_obs), "next_obs": self.augment(mb["next_obs"], k_next)}
            next_q = self._apply(target, mb["next_obs"], mb["next_chunk"])  # (E, B): head e -> target e
            y = td_target(mb["reward"], mb["discount"], next_q, lo, hi)

            def loss_fn(p):
                q = self._apply(p, mb["obs"], mb["chunk"])
                return jnp.mean((q - jax.lax.stop_gradient(y)) ** 2)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if self.cfg.bounded:
                params = project_params(params)
            target = optax.incremental_update(params, target, tau)
            return (params, target, opt_state, key), loss

        (params, target, opt_state, _), losses = jax.lax.scan(step, (params, target, opt_state, key), batches)
        return params, target, opt_state, losses

    def fit(self, policy: PolicyFn, proposals: np.ndarray | None = None) -> PolicyEstimate:
        """Train a fresh critic for `policy` on the cache and estimate its value. `proposals`: the policy's flattened
        chunks at every valid slot, (n_valid, >= H * A), from `policy_chunks` with this or a longer horizon: running
        a policy over the whole cache is the costly part, so evaluators of one policy (chunked TD and per-step FQE)
        can share one pass, and then also score the same sampled actions."""
        cfg, cache = self.cfg, self.cache
        sampler = ChunkSampler(cache, cfg.horizon, cfg.gamma, fractions=cfg.fractions, next_keys=[],
                               chunk_keys=("action",), seed=cfg.seed, time_limit=cfg.time_limit)
        valid = np.flatnonzero(cache.valid)
        width = cfg.horizon * self.action_dim
        pi = np.zeros((cache.capacity, width), np.float32)
        if proposals is None:
            pi[valid] = self.policy_chunks(policy, valid)
        elif proposals.shape[0] != len(valid) or proposals.shape[1] < width:
            raise UserError(f"proposals of shape {proposals.shape} do not cover this cache's {len(valid)} valid "
                            f"slots with chunks of {width} values; compute them with policy_chunks")
        else:
            pi[valid] = proposals[:, :width]
        key = jax.random.PRNGKey(cfg.seed)
        params = self.network.init(key, self._obs(valid[:1]), jnp.zeros((1, cfg.horizon * self.action_dim)),
                                   **({"method": PixelCritic.initialize} if self.image_keys else {}))
        key = jax.random.fold_in(key, 1)  # image augmentation
        if cfg.bounded:
            params = project_params(params)
        target, opt_state = params, self.optimizer.init(params)
        starts, probs = self.proximity_weights(sampler, pi) if cfg.proximity is not None else (None, None)
        losses, done = [], 0
        while done < cfg.updates:
            n = min(self.updates_per_call, cfg.updates - done)
            batches = [sampler.sample(cfg.batch_size, None if starts is None
                                      else sampler.rng.choice(starts, cfg.batch_size, p=probs)) for _ in range(n)]
            stacked = {
                "obs": stack([self._obs(b["index"]) for b in batches]),
                "chunk": np.stack([b["action_chunk"].reshape(len(b["index"]), -1) for b in batches]),
                "reward": np.stack([b["reward"] for b in batches]),
                "discount": np.stack([b["discount"] for b in batches]),
                "next_obs": stack([self._obs(b["next_index"]) for b in batches]),
                "next_chunk": np.stack([pi[b["next_index"]] for b in batches]),
            }
            key, call_key = jax.random.split(key)
            params, target, opt_state, loss = self._train(params, target, opt_state, stacked, call_key)
            losses.append(float(loss.mean()))
            done += n
        self.params = params
        starts = cache.episode_starts()
        q = np.asarray(self._q(params, self._obs(starts), pi[starts]))  # (E, S)
        per_head = q.mean(axis=1)
        return PolicyEstimate(value=float(per_head.mean()), pessimistic=float(per_head.min()),
                              spread=float(per_head.std()), initial_values=q.mean(axis=0), losses=losses)

    def proximity_weights(self, sampler: ChunkSampler, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every sampleable window start and its probability under `proximity` (see the module docstring); `pi`: the
        policy's flattened chunk per cache slot."""
        starts = np.concatenate(sampler.index_sets())
        logged = self.cache.data["action"][sampler.window_slots(starts)].reshape(len(starts), -1)
        d2 = ((logged - pi[starts]) ** 2).mean(axis=1)
        weights = np.exp(-d2 / (2 * self.cfg.proximity ** 2)) + PROXIMITY_FLOOR
        return starts, weights / weights.sum()

    @property
    def updates_per_call(self) -> int:
        """`updates_per_call`, fewer where camera images would stack past `IMAGE_BATCH_BYTES` in one call."""
        if not self.image_keys:
            return self.cfg.updates_per_call
        per_update = 2 * self.cfg.batch_size * sum(
            int(np.prod(self.cache.spec[k][0])) * np.dtype(self.cache.spec[k][1]).itemsize for k in self.image_keys)
        return max(1, min(self.cfg.updates_per_call, IMAGE_BATCH_BYTES // per_update))

    def q_values(self, obs: np.ndarray | dict[str, np.ndarray], chunks: np.ndarray,
                 steps: np.ndarray | None = None) -> np.ndarray:
        """Q of each head for raw observations and chunks (B, H, A) under the last fitted critic: (E, B). `obs`: the
        state (B, d), or a dict {"state": (B, d), "image_<cam>": (B, H, W, 3)} (what `observation` gives; needed
        with cameras). `steps` (B,): each observation's step in its episode, needed when the critic was fitted with a
        time limit."""
        features = self._features(obs, steps)
        rows = len(chunks)
        return np.asarray(self._q(self.params, features, np.asarray(chunks, np.float32).reshape(rows, -1)))


def latest_step(value: np.ndarray, step_ndim: int) -> np.ndarray:
    """A batch at its latest step: histories (B, n, *step) -> (B, *step); a batch of single steps (B, *step) as given.
    `step_ndim`: the dimensions of one step (1 for a state vector, 3 for an image)."""
    value = np.asarray(value)
    return value[:, -1] if value.ndim == step_ndim + 2 else value


def stack(observations: list[np.ndarray | dict[str, np.ndarray]]) -> np.ndarray | dict[str, np.ndarray]:
    """Observations of several batches on a new leading axis (arrays, or dicts of arrays key by key)."""
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def mc_value(cache: ReplayCache, gamma: float) -> float:
    """Monte-Carlo baseline: the mean discounted return of the logged episodes from their first step."""
    returns = []
    for start in cache.episode_starts():
        returns.append(discounted_return(cache.data["reward"][start:start + int(cache.steps_left[start])], gamma))
    if not returns:
        raise UserError("the replay cache is empty: sync it from an episode store first")
    return float(np.mean(returns))

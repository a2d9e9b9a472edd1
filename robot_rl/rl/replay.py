"""The learner's replay: whole episodes in the data package's `ReplayCache`, n-step batches from its `NStepSampler`.

The simulation loop and the live learner share this path: the loop gathers each vector env's steps until its episode
ends and adds the whole episode to the cache (the live learner adds the store's committed episodes instead), and both
draw demo/online-mixed n-step batches through `agent_batch`. Demos and intervened steps are the demo group; the
policy's own steps the online group (`AgentConfig.demo_fraction` sets the split).

An episode that ended at a time limit stored no observation after its last step, so that step never starts a
transition (the sampler's convention); every other step bootstraps from the step n later, as on the robot.

Camera images (a recipe with `encoder.image_keys`) are cached as uint8 under their own keys next to "obs" and come
back in batches as dict observations {"state": ..., "image_<camera>": ...} for `obs` and `next_obs`. Mind the memory:
an 84x84 camera costs 21 KB a step, so 100k steps need 2.1 GB per camera (set the capacity accordingly).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from robot_rl.data import NStepSampler, ReplayCache
from robot_rl.data.replay import GROUPS
from robot_rl.errors import UserError
from robot_rl.rl.config import AgentConfig
from robot_rl.rl.encoder import STATE

EpisodeCallback = Callable[[dict[str, np.ndarray], int], None]  # (steps of one episode, env index)


def agent_batch(batch: dict[str, np.ndarray], obs_key: str, image_keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """A sampler batch (store key names) as the agent's batch (`obs`, `next_obs`, base actions, n-step sums, `demo`:
    the row is from the demo side); with
    `image_keys`, `obs` and `next_obs` are dicts of the flat vector ("state") and the images."""
    def observation(prefix: str):
        if not image_keys:
            return batch[prefix + obs_key]
        return {STATE: batch[prefix + obs_key], **{k: batch[prefix + k] for k in image_keys}}

    return {"obs": observation(""), "action": batch["action"], "reward": batch["reward"],
            "discount": batch["discount"], "next_obs": observation("next_"), "base_action": batch["base_action"],
            "next_base_action": batch["next_base_action"], "demo": batch["group"] == GROUPS.index("demo")}


def replay_spec(obs_dim: int, action_dim: int, obs_key: str = "obs",
                image_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
    """The keys the learner caches: the flat observation, executed and base actions, rewards and episode ends, and
    the camera images (uint8, (H, W, 3) per key of `image_shapes`)."""
    spec = {obs_key: ((obs_dim,), "float32"), "action": ((action_dim,), "float32"),
            "base_action": ((action_dim,), "float32"), "reward": ((), "float32"), "terminated": ((), "bool"),
            "intervention": ((), "bool")}
    spec.update({k: (tuple(int(n) for n in shape), "uint8") for k, shape in (image_shapes or {}).items()})
    return spec


def takeover_rewards(steps: Mapping[str, np.ndarray], penalty: float) -> np.ndarray:
    """RLIF's signal on one episode: its rewards, minus `penalty` at the last step before each takeover starts (the
    policy's step that made the person take over; a takeover at the first step has none). Episodes without an
    `intervention` key keep their rewards."""
    reward = np.asarray(steps["reward"], np.float32).copy()
    if "intervention" not in steps:
        return reward
    taken = np.asarray(steps["intervention"], bool)
    starts = np.flatnonzero(taken[1:] & ~taken[:-1]) + 1
    reward[starts - 1] -= penalty
    return reward


def shape_rewards(cache: ReplayCache, cfg: AgentConfig) -> None:
    """Make `cache` store the recipe's rewards for every episode added from now on (the takeover penalty, if set)."""
    if cfg.takeover_penalty > 0:
        cache.reward_fn = functools.partial(takeover_rewards, penalty=cfg.takeover_penalty)


def n_step_sampler(cache: ReplayCache, cfg: AgentConfig, obs_key: str, seed: int) -> NStepSampler:
    fractions = {"demo": cfg.demo_fraction, "online": 1.0 - cfg.demo_fraction}
    return NStepSampler(cache, n=cfg.n_step, gamma=cfg.gamma, fractions=fractions,
                        next_keys=[obs_key, "base_action", *cfg.encoder.image_keys], seed=seed)


class EpisodeReplay:
    """Per-env step buffers of a vector env, flushed as whole episodes into a `ReplayCache`.

    `add(step)` takes one vector step (arrays with a leading num_envs axis; at least the `replay_spec` keys, with the
    flat observation under "obs" and, with cameras, each `cfg.encoder.image_keys` image under its key; extra keys such
    as `residual_action` are kept for `on_episode`). When an env's episode ends, the episode goes to the cache and to
    `on_episode(steps, env)` (e.g. to write it to a store).
    """

    OBS = "obs"

    def __init__(self, cache: ReplayCache, cfg: AgentConfig, num_envs: int, seed: int = 0,
                 on_episode: EpisodeCallback | None = None):
        self.cache, self.num_envs, self.on_episode = cache, num_envs, on_episode
        self.image_keys = tuple(cfg.encoder.image_keys)
        missing = [k for k in self.image_keys if k not in cache.spec]
        if missing:
            raise UserError(f"the replay cache lacks the camera key(s) {missing} the recipe reads; build it with "
                            "replay_spec(..., image_shapes={key: (H, W, 3)})")
        shape_rewards(cache, cfg)
        self.sampler = n_step_sampler(cache, cfg, self.OBS, seed)
        self.pending: list[list[dict[str, np.ndarray]]] = [[] for _ in range(num_envs)]
        self.online_episodes = 0

    def __len__(self) -> int:
        return self.cache.size

    def add_episode(self, steps: dict[str, np.ndarray], source: str) -> None:
        """A whole episode from elsewhere (demos): `source` scripted/teleop joins the demo group."""
        self.cache.add_episode(steps, source)

    def add(self, step: dict[str, np.ndarray]) -> None:
        for i in range(self.num_envs):
            self.pending[i].append({key: value[i] for key, value in step.items()})
        for i in np.flatnonzero(np.asarray(step["terminated"]) | np.asarray(step["truncated"])):
            episode = {key: np.stack([s[key] for s in self.pending[i]]) for key in self.pending[i][0]}
            self.pending[i] = []
            self.cache.add_episode(episode, "policy")
            self.online_episodes += 1
            if self.on_episode is not None:
                self.on_episode(episode, int(i))

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        return agent_batch(self.sampler.sample(batch_size), self.OBS, self.image_keys)

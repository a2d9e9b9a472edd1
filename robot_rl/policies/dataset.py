"""Training windows for a base policy, read once from an episode store into memory.

Each sample is the observation history (steps t-n_obs+1..t) and the action chunk (steps t..t+H-1) of one episode,
padded by repeating the first observation and the last action, so every step of every demo is a training target
(as in Diffusion Policy). This differs from `robot_rl.data.ChunkSampler`, which serves RL: it never pads past a
truncated end and returns no observation history, so it is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError


@dataclass
class EpisodeData:
    """Steps of some episodes, concatenated: obs by env key (no `obs/` prefix), actions, cumulative episode ends."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    episode_ends: np.ndarray
    episode_ids: np.ndarray  # the store's episode index of each episode here

    @property
    def num_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def subset(self, episodes: np.ndarray) -> EpisodeData:
        """The given positions (not store indices) of this data's episodes, in that order."""
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        steps = np.concatenate([np.arange(starts[e], self.episode_ends[e]) for e in episodes])
        lengths = self.episode_ends[episodes] - starts[episodes]
        return EpisodeData({k: v[steps] for k, v in self.obs.items()}, self.actions[steps], np.cumsum(lengths),
                           self.episode_ids[episodes])


def store_task(store: EpisodeStore, task: str | None) -> str:
    """The task the store's episodes were recorded for; a given task that disagrees is a UserError."""
    tasks = sorted({str(t) for t in store.meta["task"] if str(t)})
    if task is None:
        if len(tasks) != 1:
            raise UserError(f"store {store.root} holds tasks {tasks or ['(unnamed)']}; give task=NAME")
        return tasks[0]
    if tasks and task not in tasks:
        raise UserError(f"store {store.root} holds episodes of task(s) {tasks}, not {task!r}")
    return task


def read_episodes(store: EpisodeStore, obs_keys: tuple[str, ...], action_key: str = "action",
                  success_only: bool = False) -> EpisodeData:
    """Read the keys a policy needs for every committed episode (or only the successful ones)."""
    wanted = [f"obs/{k}" for k in obs_keys] + [action_key]
    missing = [k for k in wanted if k not in store.schema]
    if missing:
        raise UserError(f"store {store.root} has no key(s) {missing} that the policy config asks for; "
                        f"its keys are: {', '.join(store.schema)}")
    episodes = np.arange(store.num_episodes)
    if success_only:
        episodes = episodes[np.asarray(store.meta["success"], dtype=bool)]
    if len(episodes) == 0:
        raise UserError(f"store {store.root} has no {'successful ' if success_only else ''}episodes to train on")
    steps = store.read_steps(0, store.num_steps, wanted)
    data = EpisodeData({k: steps[f"obs/{k}"] for k in obs_keys}, np.asarray(steps[action_key], np.float32),
                       np.asarray(store.episode_ends, np.int64), np.arange(store.num_episodes))
    return data.subset(episodes) if len(episodes) < store.num_episodes else data


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation episode positions: whole episodes, so validation measures generalization to new ones."""
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = round(num_episodes * val_fraction) if val_fraction > 0 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 else 0), num_episodes - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class ChunkWindows:
    """Index arithmetic for (observation history, action chunk) windows that never cross an episode boundary."""

    def __init__(self, data: EpisodeData, n_obs_steps: int, horizon: int) -> None:
        self.data = data
        lengths = np.diff(np.concatenate([[0], data.episode_ends]))
        self.first = np.repeat(data.episode_ends - lengths, lengths)  # per step: its episode's first step
        self.last = np.repeat(data.episode_ends - 1, lengths)  # and last step
        self.obs_offsets = np.arange(-n_obs_steps + 1, 1)
        self.action_offsets = np.arange(horizon)

    def __len__(self) -> int:
        return self.data.num_steps

    def batch(self, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """obs {key: (B, n_obs, *shape)} and actions (B, H, action_dim) for the windows starting at `index`."""
        first, last = self.first[index][:, None], self.last[index][:, None]
        obs_steps = np.clip(index[:, None] + self.obs_offsets, first, last)
        action_steps = np.clip(index[:, None] + self.action_offsets, first, last)
        return {k: v[obs_steps] for k, v in self.data.obs.items()}, self.data.actions[action_steps]

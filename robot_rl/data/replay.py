"""In-memory replay cache of whole episodes, fed from the committed tail of an episode store.

zarr is the durable log; this cache is the sampling hot path. It is a ring of contiguous episodes: an episode never
wraps around the end of the ring, and when new data overwrites part of an old episode the whole old episode leaves
the cache, so every sampleable window lies inside one live episode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robot_rl.errors import UserError

GROUPS = ("demo", "online")  # demo side: scripted and teleop episodes, and every intervened step
DEMO_SOURCES = ("scripted", "teleop")


@dataclass
class _Episode:
    start: int
    length: int
    version: int  # cache version right after it was added: samplers precompute per-episode values once


def newest_that_fit(lengths: np.ndarray, capacity: int) -> int:
    """Index of the oldest of the newest episodes (of these `lengths`, oldest first) whose steps fit `capacity`."""
    return len(lengths) - int((np.cumsum(np.asarray(lengths)[::-1]) <= capacity).sum())


class ReplayCache:
    """A fixed-capacity ring of steps with per-step episode bookkeeping.

    Per slot it keeps the step arrays (the chosen keys), `steps_left` (steps to the end of its episode, itself
    included), `ends_terminal` (the episode ended by termination), `group` (index into GROUPS) and `valid`.
    `reward_fn(steps)`, when set, gives the rewards to cache for an added episode (a learner's reward shaping, e.g.
    RLIF's takeover penalty); the store keeps the rewards as recorded.
    """

    def __init__(self, capacity: int, spec: dict[str, tuple[tuple[int, ...], np.dtype]]):
        if capacity <= 0:
            raise UserError(f"replay capacity must be positive, got {capacity}")
        for key in ("reward", "terminated"):
            if key not in spec:
                raise UserError(f"replay cache needs the key {key!r}; include it in the cached keys")
        self.capacity = capacity
        self.spec = {key: (tuple(shape), np.dtype(dtype)) for key, (shape, dtype) in spec.items()}
        self.data = {key: np.zeros((capacity, *shape), dtype) for key, (shape, dtype) in self.spec.items()}
        self.steps_left = np.zeros(capacity, np.int32)
        self.step = np.zeros(capacity, np.int32)  # index of each slot's step in its episode
        self.ends_terminal = np.zeros(capacity, bool)
        self.group = np.zeros(capacity, np.int8)
        self.valid = np.zeros(capacity, bool)
        self.version = 0  # bumped on every change, so samplers know when to rebuild their index sets
        self._episodes: deque[_Episode] = deque()
        self._head = 0
        self._synced_episodes = 0  # store episodes already pulled by `sync`
        self.reward_fn: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None

    @classmethod
    def for_store(cls, store, capacity: int, keys: list[str] | None = None) -> ReplayCache:
        """A cache for the store's keys (default: every key that is not an image)."""
        if keys is None:
            keys = [k for k, s in store.schema.items() if not (s.dtype == np.uint8 and len(s.shape) >= 2)]
        missing = [k for k in keys if k not in store.schema]
        if missing:
            raise UserError(f"store {store.root} has no key {missing[0]!r}; its keys are: {', '.join(store.schema)}")
        return cls(capacity, {k: (store.schema[k].shape, store.schema[k].dtype) for k in keys})

    def episodes_since(self, version: int) -> list[tuple[int, int]]:
        """(start, length) of the live episodes added after cache version `version`."""
        return [(e.start, e.length) for e in self._episodes if e.version > version]

    def episode_starts(self) -> np.ndarray:
        """Slots of the first step of every live episode (the initial states a policy value is averaged over)."""
        return np.array([episode.start for episode in self._episodes], dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.valid.sum())

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def add_episode(self, steps: dict[str, np.ndarray], source: str) -> None:
        """Add one whole episode (arrays with steps on axis 0). Intervened steps join the demo group."""
        length = len(steps["reward"])
        if length == 0:
            return
        if length > self.capacity:
            raise UserError(f"episode of {length} steps does not fit a replay cache of {self.capacity}; "
                            "raise the capacity")
        missing = [k for k in self.spec if k not in steps]
        if missing:
            raise UserError(f"episode lacks cached key {missing[0]!r}")
        if self._head + length > self.capacity:  # do not wrap an episode: drop what lies past the head, restart at 0
            self._evict(self._head, self.capacity)
            self._head = 0
        start, stop = self._head, self._head + length
        self._evict(start, stop)
        for key in self.spec:
            self.data[key][start:stop] = steps[key]
        if self.reward_fn is not None:
            self.data["reward"][start:stop] = self.reward_fn(steps)
        self.steps_left[start:stop] = np.arange(length, 0, -1)
        self.step[start:stop] = np.arange(length)
        self.ends_terminal[start:stop] = bool(np.asarray(steps["terminated"])[-1])
        group = np.full(length, GROUPS.index("demo" if source in DEMO_SOURCES else "online"), np.int8)
        if "intervention" in steps:
            group[np.asarray(steps["intervention"], bool)] = GROUPS.index("demo")
        self.group[start:stop] = group
        self.valid[start:stop] = True
        self._head = stop
        self.version += 1
        self._episodes.append(_Episode(start, length, self.version))

    def select(self, episodes: Sequence[int]) -> ReplayCache:
        """A new cache holding only the chosen live episodes (indices in `episode_starts()` order), steps, groups and
        rewards as they are here: e.g. the logged data without one policy's own episodes. A snapshot for sampling,
        not for `sync` (it does not know which store episodes it holds)."""
        live = list(self._episodes)
        if len(set(episodes)) != len(episodes) or any(not 0 <= i < len(live) for i in episodes):
            raise UserError(f"select takes distinct episode indices in [0, {len(live)}), got {list(episodes)}")
        chosen = [live[i] for i in episodes]
        out = ReplayCache(sum(e.length for e in chosen) + 1, self.spec)
        per_slot = ("steps_left", "step", "ends_terminal", "group", "valid")
        for episode in chosen:
            source = slice(episode.start, episode.start + episode.length)
            target = slice(out._head, out._head + episode.length)
            for key in self.spec:
                out.data[key][target] = self.data[key][source]
            for name in per_slot:
                getattr(out, name)[target] = getattr(self, name)[source]
            out._head, out.version = target.stop, out.version + 1
            out._episodes.append(_Episode(target.start, episode.length, out.version))
        return out

    def _evict(self, start: int, stop: int) -> None:
        """Remove every live episode that overlaps slots [start, stop)."""
        kept = deque()
        for episode in self._episodes:
            if episode.start < stop and episode.start + episode.length > start:
                self.valid[episode.start:episode.start + episode.length] = False
            else:
                kept.append(episode)
        if len(kept) != len(self._episodes):
            self._episodes = kept
            self.version += 1

    def sync(self, store, refresh: bool = True) -> int:
        """Pull the store's newly committed episodes (only the tail that fits). Returns how many were added."""
        if refresh:
            store.refresh()
        first, last = self._synced_episodes, store.num_episodes
        if first >= last:
            return 0
        lengths = np.diff(np.concatenate([[0], store.episode_ends]))
        skip = max(first, newest_that_fit(lengths, self.capacity))  # older ones would be evicted at once: never read
        if skip < last:
            start = int(store.episode_ends[skip - 1]) if skip else 0
            steps = store.read_steps(start, int(store.episode_ends[last - 1]), list(self.spec))
            sources = store.meta["source"]
            offset = 0
            for i in range(skip, last):
                n = int(lengths[i])
                self.add_episode({k: v[offset:offset + n] for k, v in steps.items()}, str(sources[i]))
                offset += n
        self._synced_episodes = last
        return last - skip

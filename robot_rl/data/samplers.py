"""Batch samplers over a ReplayCache: n-step transitions and action-chunk windows, mixed by group.

Conventions (one per store step t: obs_t, action_t, reward_t received after it, terminated_t/truncated_t):
- An episode ending in termination needs no observation after its last step (no bootstrap). An episode that ended
  otherwise (time limit, operator stop) stored no observation after its last step, so a window must leave one:
  its last step is never an n-step start, and a chunk must end before it.
- n-step: m = min(n, steps available); reward = sum_{k<m} gamma^k r_{t+k}; discount = gamma^m, or 0 when the
  window reaches a terminal step; next_* = the keys at t+m.
- chunk of H: actions a_{t:t+H} (steps past a terminal end are padded with the last action and masked),
  reward = sum_{k<H} gamma^k r_{t+k} over valid steps, discount = gamma^H when s_{t+H} exists, else 0.
  With `time_limit` T, an episode that ran T steps ended at the task's time limit and ends like a terminal one:
  returns past the limit count zero, so values are returns within the limit (what an evaluation or a deployment
  with a time budget gets).
Batches also carry the cache slots `index` and `next_index`, so callers can look up per-slot precomputed values
(e.g. the chunk an evaluated policy proposes at every state, computed once instead of every batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.data.replay import GROUPS, ReplayCache
from robot_rl.errors import UserError


@dataclass
class _IndexSets:
    version: int
    by_group: list[np.ndarray]
    counts: dict[int, list[int]]  # batch size -> samples per group


class _Sampler:
    """Shared machinery: which starts are sampleable, and how many of a batch each group gets."""

    def __init__(self, cache: ReplayCache, fractions: dict[str, float] | None, seed: int | None,
                 next_keys: list[str] | None):
        fractions = fractions or {"demo": 0.5, "online": 0.5}
        unknown = [g for g in fractions if g not in GROUPS]
        if unknown:
            raise UserError(f"unknown sampling group {unknown[0]!r}; the groups are: {', '.join(GROUPS)}")
        if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
            raise UserError(f"sampling fractions must be non-negative and not all zero, got {fractions}")
        self.cache = cache
        self.fractions = np.array([float(fractions.get(g, 0.0)) for g in GROUPS])
        self.rng = np.random.default_rng(seed)
        self.keys = list(cache.spec)
        self.next_keys = [k for k in self.keys if k.startswith("obs/")] if next_keys is None else list(next_keys)
        self._index: _IndexSets | None = None

    def _sampleable(self) -> np.ndarray:
        raise NotImplementedError

    def index_sets(self) -> list[np.ndarray]:
        """Sampleable start slots per group, rebuilt only when the cache changed."""
        if self._index is None or self._index.version != self.cache.version:
            ok = self.cache.valid & self._sampleable()
            self._index = _IndexSets(self.cache.version, [np.flatnonzero(ok & (self.cache.group == g))
                                                         for g in range(len(GROUPS))], {})
        return self._index.by_group

    def counts(self, batch_size: int) -> list[int]:
        """Batch share of each group: the fractions, renormalized over the groups that have data."""
        sets = self.index_sets()
        cached = self._index.counts.get(batch_size)
        if cached is not None:
            return cached
        weights = np.where([len(s) > 0 for s in sets], self.fractions, 0.0)
        if weights.sum() <= 0:
            raise UserError("the replay cache has no sampleable data for the requested groups "
                            f"{dict(zip(GROUPS, self.fractions.tolist()))}; add episodes first")
        raw = batch_size * weights / weights.sum()
        counts = np.floor(raw).astype(int)
        counts[np.argmax(raw - counts)] += batch_size - counts.sum()
        self._index.counts[batch_size] = counts.tolist()
        return self._index.counts[batch_size]

    def sample_starts(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Start slots and their group index for one batch, in random order: any slice of the batch (a learner
        splits one draw into its UTD minibatches) mixes the groups in the configured shares, not one group each."""
        sets, counts = self.index_sets(), self.counts(batch_size)
        starts, groups = [], []
        for g, count in enumerate(counts):
            if count:
                starts.append(sets[g][self.rng.integers(0, len(sets[g]), count)])
                groups.append(np.full(count, g, np.int8))
        if len(starts) == 1:
            return starts[0], groups[0]
        order = self.rng.permutation(batch_size)
        return np.concatenate(starts)[order], np.concatenate(groups)[order]


class NStepSampler(_Sampler):
    """Single transitions with n-step discounted returns and bootstrap discounts.

    Each slot's return, discount and next slot depend only on its own episode, so they are computed once when the
    episode enters the cache; a batch is then a handful of gathers.
    """

    def __init__(self, cache: ReplayCache, n: int = 1, gamma: float = 0.99, *,
                 fractions: dict[str, float] | None = None, next_keys: list[str] | None = None,
                 seed: int | None = None):
        super().__init__(cache, fractions, seed, next_keys)
        if n < 1:
            raise UserError(f"n-step must be >= 1, got {n}")
        self.n, self.gamma = n, gamma
        self._return = np.zeros(cache.capacity, np.float32)
        self._discount = np.zeros(cache.capacity, np.float32)
        self._next = np.zeros(cache.capacity, np.int64)
        self._steps = np.zeros(cache.capacity, np.int32)
        self._seen_version = -1
        self._gathered = [k for k in self.keys if k not in ("reward", "terminated")]

    def _sampleable(self) -> np.ndarray:
        return self.cache.ends_terminal | (self.cache.steps_left > 1)

    def _precompute(self) -> None:
        """Returns, discounts and next slots of the episodes added since the last look."""
        cache = self.cache
        if self._seen_version == cache.version:
            return
        powers = self.gamma ** np.arange(self.n + 1)
        for start, length in cache.episodes_since(self._seen_version):
            t = np.arange(length)
            left = length - t
            terminal = bool(cache.ends_terminal[start])
            m = np.minimum(self.n, left if terminal else np.maximum(left - 1, 0))
            rewards = cache.data["reward"][start:start + length].astype(np.float64)
            ks = np.arange(self.n)
            window = np.minimum(t[:, None] + ks, length - 1)
            self._return[start:start + length] = (rewards[window] * powers[:self.n] * (ks < m[:, None])).sum(1)
            reaches_end = terminal & (m == left)
            self._discount[start:start + length] = np.where(reaches_end, 0.0, powers[m])
            self._next[start:start + length] = start + np.where(reaches_end, t, t + m)
            self._steps[start:start + length] = m
        self._seen_version = cache.version

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        self._precompute()
        data = self.cache.data
        idx, group = self.sample_starts(batch_size)
        next_idx = self._next[idx]
        batch = {key: data[key][idx] for key in self._gathered}
        for key in self.next_keys:
            batch[f"next_{key}"] = data[key][next_idx]
        batch.update({"reward": self._return[idx], "discount": self._discount[idx], "n_steps": self._steps[idx],
                      "group": group, "index": idx, "next_index": next_idx})
        return batch


class ChunkSampler(_Sampler):
    """Action-chunk windows of length H that never cross an episode end."""

    def __init__(self, cache: ReplayCache, horizon: int, gamma: float = 0.99, *,
                 fractions: dict[str, float] | None = None, next_keys: list[str] | None = None,
                 chunk_keys: tuple[str, ...] = ("action",), seed: int | None = None, time_limit: int | None = None):
        super().__init__(cache, fractions, seed, next_keys)
        if horizon < 1:
            raise UserError(f"chunk horizon must be >= 1, got {horizon}")
        if time_limit is not None and time_limit < 1:
            raise UserError(f"time_limit must be a positive number of steps (or null for none), got {time_limit}")
        self.time_limit = time_limit
        missing = [k for k in chunk_keys if k not in cache.spec]
        if missing:
            raise UserError(f"chunk key {missing[0]!r} is not in the replay cache")
        self.horizon, self.gamma, self.chunk_keys = horizon, gamma, tuple(chunk_keys)
        self._powers = gamma ** np.arange(horizon + 1)

    def _sampleable(self) -> np.ndarray:
        cache = self.cache
        ends = cache.ends_terminal
        if self.time_limit is not None:
            ends = ends | (cache.step + cache.steps_left >= self.time_limit)
        return ends | (cache.steps_left > self.horizon)

    def window_slots(self, starts: np.ndarray) -> np.ndarray:
        """(len(starts), H) cache slots of the window at each start, padded past an episode's end by repeating its
        last step."""
        left = self.cache.steps_left[starts]
        return starts[:, None] + np.minimum(np.arange(self.horizon), left[:, None] - 1)

    def sample(self, batch_size: int, starts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """`batch_size` windows mixed by group, or the windows at `starts` (sampleable slots the caller drew, e.g.
        by its own weights over `index_sets()`)."""
        cache, H = self.cache, self.horizon
        if starts is None:
            idx, group = self.sample_starts(batch_size)
        else:
            idx = np.asarray(starts, np.int64)
            group = cache.group[idx]
        left = cache.steps_left[idx]
        mask = np.arange(H) < left[:, None]
        window = self.window_slots(idx)
        reward = (cache.data["reward"][window] * self._powers[:H] * mask).sum(axis=1)
        bootstrap = left > H
        next_idx = np.where(bootstrap, idx + H, idx)
        batch = {key: cache.data[key][idx] for key in self.keys}
        batch.update({f"{key}_chunk": cache.data[key][window] for key in self.chunk_keys})
        batch.update({f"next_{key}": cache.data[key][next_idx] for key in self.next_keys})
        batch.update({"chunk_mask": mask, "reward": reward.astype(np.float32),
                      "discount": np.where(bootstrap, self._powers[H], 0.0).astype(np.float32),
                      "group": group, "index": idx, "next_index": next_idx})
        return batch

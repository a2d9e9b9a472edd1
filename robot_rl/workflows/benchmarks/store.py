"""`robot-rl bench store`: episode-store write speed against raw np.save of the same bytes, and sampling speed.

Zarr and raw episodes alternate in one process so both see the same disk and page-cache conditions.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from robot_rl.data import EpisodeStore, NStepSampler, ReplayCache, make_step_schema


def synthetic_episode(rng: np.random.Generator, length: int, state_dim: int, action_dim: int,
                      image_size: int | None) -> list[dict]:
    """Steps of one synthetic episode with every standard key (images as random uint8 frames)."""
    steps = []
    for t in range(length):
        step = {"obs/state": rng.standard_normal(state_dim, dtype=np.float32),
                "action": rng.uniform(-1, 1, action_dim).astype(np.float32),
                "policy_action": rng.uniform(-1, 1, action_dim).astype(np.float32),
                "base_action": rng.uniform(-1, 1, action_dim).astype(np.float32),
                "residual_action": np.zeros(action_dim, np.float32),
                "human_action": np.full(action_dim, np.nan, np.float32),
                "intervention": False, "reward": float(t == length - 1), "terminated": t == length - 1,
                "truncated": False, "timestamp": 1.0e9 + t * 0.05}
        if image_size:
            step["obs/image_front"] = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        steps.append(step)
    return steps


def run(cfg: DictConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    obs_spec = {"state": ((cfg.state_dim,), "float32"), "image_front": ((cfg.image_size, cfg.image_size, 3), "uint8")}
    schema = make_step_schema(obs_spec, cfg.action_dim)
    episodes = [synthetic_episode(rng, cfg.episode_length, cfg.state_dim, cfg.action_dim, cfg.image_size)
                for _ in range(2)]
    workdir = Path(tempfile.mkdtemp(prefix="robot_rl_bench_store_", dir=cfg.get("dir")))
    try:
        store = EpisodeStore.create(workdir / "store", schema, chunk_bytes=int(cfg.chunk_mib * 2**20))
        raw_dir = workdir / "raw"
        raw_dir.mkdir()
        zarr_s = raw_s = 0.0
        with store.writer() as writer:
            for i in tqdm(range(cfg.episodes), desc="bench store", disable=not cfg.progress):
                steps = episodes[i % 2]
                t0 = time.perf_counter()
                for step in steps:
                    writer.add_step(step)
                writer.end_episode(success=True, source="scripted", task="bench")
                zarr_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                for key in schema:  # the raw baseline: the same arrays, one np.save per key per episode
                    np.save(raw_dir / f"{i}_{key.replace('/', '_')}.npy", np.stack([np.asarray(s[key]) for s in steps]))
                raw_s += time.perf_counter() - t0
        frames = cfg.episodes * cfg.episode_length
        store.close()
        sample_rate = _sample_rate(EpisodeStore.open(workdir / "store"), cfg)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"write_frames_per_s": frames / zarr_s, "raw_write_frames_per_s": frames / raw_s,
            "write_ratio": raw_s / zarr_s, "sample_batches_per_s": sample_rate,
            "episodes": cfg.episodes, "episode_length": cfg.episode_length, "image_size": cfg.image_size,
            "batch_size": cfg.batch_size, "n_step": cfg.n_step}


def _sample_rate(store: EpisodeStore, cfg: DictConfig) -> float:
    """Batches/s of n-step state transitions drawn from a replay cache synced from the store."""
    cache = ReplayCache.for_store(store, capacity=max(store.num_steps, 1),
                                  keys=["obs/state", "action", "reward", "terminated"])
    cache.sync(store)
    sampler = NStepSampler(cache, n=cfg.n_step, gamma=0.99, seed=cfg.seed)
    sampler.sample(cfg.batch_size)  # build the index sets outside the timing
    t0 = time.perf_counter()
    for _ in range(cfg.sample_batches):
        sampler.sample(cfg.batch_size)
    return cfg.sample_batches / (time.perf_counter() - t0)

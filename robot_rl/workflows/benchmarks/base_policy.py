"""`robot-rl bench base-policy`: diffusion chunk latency, and the async scheduler serving a 20 Hz control loop.

Two measurements in one process:
1. chunk latency: `policy.act(obs)` (state obs, `ddim_steps` DDIM steps, horizon H) called back to back;
2. the async scheduler driven by a fixed-rate loop for `steps` control steps: each step's latency (the time
   `scheduler.step` took) and whether it finished before the next tick (a missed deadline otherwise), while the
   worker thread infers the next chunk concurrently. The first step of the episode waits for the first chunk by
   design (there is nothing to execute before it); it is counted like every other step.
Without `checkpoint` an untrained policy of the default size is built: latency does not depend on the weights.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from robot_rl.policies import ChunkPolicy, ChunkScheduler, PolicyConfig, PolicyModel, PolicySpec, load_policy
from robot_rl.scheduling import cpu_steal_seconds, cpu_steal_since

TARGETS = {"chunk_latency_ms_p99": 50.0, "step_latency_ms_p99": 1.0, "missed_deadlines": 0}


def default_policy(state_dim: int, action_dim: int, horizon: int, ddim_steps: int, rate_hz: float) -> ChunkPolicy:
    """An untrained diffusion policy with the default architecture (configs/policy/diffusion.yaml)."""
    config = PolicyConfig(horizon=horizon, ddim_steps=ddim_steps)
    spec = PolicySpec(obs_keys=("state",), action_dim=action_dim, horizon=horizon, n_obs_steps=config.n_obs_steps,
                      rate_hz=rate_hz, task="bench", obs_shapes={"state": (state_dim,)},
                      n_action_steps=config.n_action_steps, kind="diffusion")
    torch.manual_seed(0)
    return ChunkPolicy(PolicyModel(spec, config))


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1e3, 3)


def measure_chunks(policy: ChunkPolicy, observe: Any, chunks: int) -> list[float]:
    """Seconds per `act` call, after a short warm-up."""
    for _ in range(5):
        policy.act(observe())
    times = []
    for _ in range(chunks):
        obs = observe()
        start = time.perf_counter()
        policy.act(obs)
        times.append(time.perf_counter() - start)
    return times


def run_control_loop(scheduler: ChunkScheduler, observe: Any, steps: int, rate_hz: float,
                     progress: bool) -> dict[str, Any]:
    """Drive `scheduler.step` at a fixed rate; per-step latency, missed deadlines, held steps, chunks used."""
    period = 1.0 / rate_hz
    latencies, lateness, missed, held, chunk_ids = [], [], 0, 0, set()
    scheduler.reset()
    start = time.perf_counter()
    for i in tqdm(range(steps), desc="async scheduler", file=sys.stderr, disable=not progress, mininterval=1.0):
        tick = start + i * period
        while (wait := tick - time.perf_counter()) > 0:
            time.sleep(wait)
        obs = observe()
        began = time.perf_counter()
        _, info = scheduler.step(obs)
        finished = time.perf_counter()
        latencies.append(finished - began)
        lateness.append(began - tick)  # how late the loop woke up (OS scheduling, the GIL): not the scheduler's
        missed += finished > tick + period
        held += bool(info["held"])
        chunk_ids.add(info["chunk_id"])
    return {"step_latency_ms_p50": percentile_ms(latencies, 50), "step_latency_ms_p99": percentile_ms(latencies, 99),
            "step_latency_ms_max": round(max(latencies) * 1e3, 3), "first_step_ms": round(latencies[0] * 1e3, 3),
            "wakeup_lateness_ms_p99": percentile_ms(lateness, 99), "missed_deadlines": int(missed),
            "held_steps": int(held), "chunks_used": len(chunk_ids), "steps": steps,
            "loop_seconds": round(time.perf_counter() - start, 2)}


def bench_base_policy(checkpoint: str | None = None, steps: int = 2000, rate_hz: float = 20.0, ddim_steps: int = 10,
                      horizon: int = 16, chunks: int = 200, state_dim: int = 25, action_dim: int = 6, seed: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Chunk latency percentiles and async-scheduler step timing (see the module docstring)."""
    if checkpoint:
        policy = load_policy(checkpoint, ddim_steps=ddim_steps)
    else:
        policy = default_policy(state_dim, action_dim, horizon, ddim_steps, rate_hz)
    rng = np.random.default_rng(seed)
    shapes = policy.spec.obs_shapes
    state = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items() if len(s) == 1}

    def observe() -> dict[str, np.ndarray]:
        """A slowly drifting synthetic observation (images, if any, are random frames)."""
        for value in state.values():
            value += rng.normal(scale=0.01, size=value.shape).astype(np.float32)
        images = {k: rng.integers(0, 256, s, dtype=np.uint8) for k, s in shapes.items() if len(s) == 3}
        return {**{k: v.copy() for k, v in state.items()}, **images}

    steal_before = cpu_steal_seconds()
    chunk_times = measure_chunks(policy, observe, chunks)
    with ChunkScheduler(policy, mode="async") as scheduler:
        loop = run_control_loop(scheduler, observe, steps, rate_hz, progress)
    steal = cpu_steal_since(steal_before)  # the host's share of a bad tail on a virtual machine
    result = {"chunk_latency_ms_p50": percentile_ms(chunk_times, 50),
              "chunk_latency_ms_p99": percentile_ms(chunk_times, 99),
              "ddim_steps": policy.ddim_steps, "horizon": policy.spec.horizon,
              "n_action_steps": policy.spec.n_action_steps, "rate_hz": rate_hz,
              "params": sum(p.numel() for p in policy.model.parameters()), **loop, "cpu_steal_s": steal}
    result["targets_met"] = (result["chunk_latency_ms_p99"] <= TARGETS["chunk_latency_ms_p99"]
                             and result["step_latency_ms_p99"] <= TARGETS["step_latency_ms_p99"]
                             and result["missed_deadlines"] == TARGETS["missed_deadlines"])
    return result


def run(cfg: DictConfig) -> dict[str, Any]:
    return bench_base_policy(checkpoint=cfg.checkpoint, steps=int(cfg.steps), rate_hz=float(cfg.rate_hz),
                             ddim_steps=int(cfg.ddim_steps), horizon=int(cfg.horizon), chunks=int(cfg.chunks),
                             state_dim=int(cfg.state_dim), action_dim=int(cfg.action_dim), seed=int(cfg.seed),
                             progress=bool(cfg.progress))

"""`robot-rl bench sim`: environment steps per second of a sim mirror, one env and vectorized, state and images.

Actions are uniform random (the physics does not care who sends them). Vectorized figures count env steps summed over
all envs; both gymnasium vector modes are timed and the faster one is the headline `vec_env_steps_per_s`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from omegaconf import DictConfig

import sim


def env_rate(task: str, steps: int, cameras: tuple[str, ...], image_size: int, seed: int) -> float:
    """Steps per second of one env (resets included)."""
    env = sim.make_env(task, cameras=cameras, image_size=image_size, seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, env.robot.action_dim)).astype(np.float32)
    env.step(actions[0])  # the first step builds the renderer
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vec_rate(task: str, num_envs: int, steps: int, mode: str, cameras: tuple[str, ...], image_size: int,
             seed: int) -> float:
    """Env steps per second (summed over envs) of a vector env; it resets its envs itself."""
    envs = sim.make_vec_env(task, num_envs, vectorization_mode=mode, cameras=cameras, image_size=image_size)
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, *envs.action_space.shape)).astype(np.float32)
    envs.step(actions[0])
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    rate = steps * num_envs / (time.perf_counter() - start)
    envs.close()
    return rate


def bench_sim(task: str = "PushCube", num_envs: int = 4, steps: int = 2000, image_steps: int = 300,
              image_size: int = 84, camera: str = "front", seed: int = 0) -> dict[str, Any]:
    """Throughput with state observations and with one `image_size` camera; see the module docstring."""
    result: dict[str, Any] = {"task": task, "num_envs": num_envs, "image_size": image_size, "camera": camera}
    for prefix, cameras, n in (("", (), steps), ("image_", (camera,), image_steps)):
        single = env_rate(task, n, cameras, image_size, seed)
        modes = {mode: vec_rate(task, num_envs, max(1, n // num_envs), mode, cameras, image_size, seed)
                 for mode in ("sync", "async")}
        best = max(modes, key=modes.get)
        result.update({f"{prefix}env_steps_per_s": round(single, 1),
                       f"{prefix}vec_env_steps_per_s": round(modes[best], 1), f"{prefix}vec_mode": best,
                       f"{prefix}sync_vec_env_steps_per_s": round(modes["sync"], 1),
                       f"{prefix}async_vec_env_steps_per_s": round(modes["async"], 1),
                       f"{prefix}vec_speedup": round(modes[best] / single, 2)})
    return result


def run(cfg: DictConfig) -> dict[str, Any]:
    return bench_sim(task=str(cfg.task), num_envs=int(cfg.num_envs), steps=int(cfg.steps),
                     image_steps=int(cfg.image_steps), image_size=int(cfg.image_size), camera=str(cfg.camera),
                     seed=int(cfg.seed))

"""`robot-rl collect task=... episodes=N out=ROOT`: roll the scripted expert out in a sim mirror into an episode store.

`collect(...)` is the plain function that `robot-rl demo` and the tests call. An existing store at `out` with the same
schema is appended to; anything bad in the inputs fails before the store is touched.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import sim
from robot_rl.data import EpisodeStore, make_step_schema
from robot_rl.errors import UserError


def collect(task: str, out: str | Path, episodes: int, variant: str | Mapping[str, Any] = "nominal",
            noise: float = 0.0, fail_prob: float = 0.0, seed: int = 0, cameras: Sequence[str] | None = None,
            image_size: int | Sequence[int] | None = None, task_settings: Mapping[str, Any] | None = None,
            progress: bool = True, recovery_steps: int = 0, recovery_from: str = "goal") -> dict[str, Any]:
    """Write `episodes` expert episodes of `task` to the store at `out`; returns episodes, success_rate, steps.

    `cameras` (e.g. ["front"]) adds image observations; `task_settings` overrides configs/task/<task>.yaml.
    Every step stores the executed action (with the expert's `noise`) as `action` and `base_action`, the expert's
    noiseless proposal as `policy_action` (DART-style labels for `train-base train.action_key=policy_action`: what
    the expert meant in the states the noise led to), a zero `residual_action`, an all-NaN `human_action`, and a
    timestamp on the control clock of the episode.

    `recovery_steps` > 0 makes recovery demos: each episode first runs 1..recovery_steps unrecorded steps of the
    expert aiming at a wrong goal (`recovery_from="goal"`, as with `fail_prob`) or 2.5-4 cm beside the object
    (`"object"`: a missed grasp, a push from the wrong point), then records the expert recovering from the state that
    left: states the clean demos never visit (an object pushed off its line, closed fingers beside the cube), with
    clean labels.
    """
    if episodes < 1:
        raise UserError(f"episodes={episodes} must be at least 1")
    if recovery_steps < 0:
        raise UserError(f"recovery_steps={recovery_steps} must be 0 (plain demos) or a number of steps")
    if recovery_from not in ("goal", "object"):
        raise UserError(f"recovery_from={recovery_from!r}; use goal (a wrong goal) or object (beside the object)")
    env = make_task_env(task, variant, cameras, image_size, task_settings)
    expert = sim.make_expert(task, noise=noise, fail_prob=fail_prob, seed=seed, action_mode=env.robot.action_mode)
    dt = 1.0 / env.robot.control_hz
    successes = steps = 0
    rng = np.random.default_rng(seed)
    recorder = None
    try:
        recorder = EpisodeRecorder(out, env, f"expert(noise={noise},fail_prob={fail_prob})", "scripted")
        for episode in tqdm(range(episodes), desc=f"collect {task}", unit="ep", file=sys.stderr,
                            disable=not progress):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            expert.reset()
            if recovery_steps:
                obs = lead_astray(env, expert, obs, int(rng.integers(1, recovery_steps + 1)),
                                  missing=recovery_from == "object")
            start, done, t, success = time.time(), False, 0, False
            while not done:
                action = expert.act(obs)
                next_obs, reward, success, truncated, _ = env.step(action)
                recorder.step(obs, action, expert.proposal, reward, success, truncated, start + t * dt, base=action)
                obs, done, t = next_obs, success or truncated, t + 1
            recorder.end(success)
            successes += int(success)
            steps += t
    finally:
        try:
            env.close()
        finally:
            if recorder is not None:
                recorder.close()
    return {"out": str(out), "episodes": episodes, "success_rate": successes / episodes, "steps": steps,
            "task": task, "variant": env.variant.name}


class EpisodeRecorder:
    """Mirror episodes into an episode store (created, or appended to with the same schema), step by step, as the
    robot's recorder writes them: every observation key under `obs/`, no human and no residual action. `source` and
    `policy_id` label every episode; `base` defaults to the proposal."""

    def __init__(self, root: str | Path, env: sim.MirrorEnv, policy_id: str, source: str) -> None:
        self.env, self.policy_id, self.source = env, policy_id, source
        self.store = EpisodeStore.create(root, make_step_schema(env.robot.obs_spec, env.robot.action_dim),
                                         exist_ok=True)
        self.writer = self.store.writer()
        self.no_human = np.full(env.robot.action_dim, np.nan, np.float32)
        self.no_residual = np.zeros(env.robot.action_dim, np.float32)

    def step(self, obs: Mapping[str, np.ndarray], action: np.ndarray, proposal: np.ndarray, reward: float,
             terminated: bool, truncated: bool, timestamp: float, base: np.ndarray | None = None) -> None:
        self.writer.add_step({**{f"obs/{key}": value for key, value in obs.items()}, "action": action,
                              "policy_action": proposal, "base_action": proposal if base is None else base,
                              "residual_action": self.no_residual, "human_action": self.no_human,
                              "intervention": False, "reward": reward, "terminated": terminated,
                              "truncated": truncated, "timestamp": timestamp})

    def end(self, success: bool) -> None:
        self.writer.end_episode(success=bool(success), source=self.source, policy_id=self.policy_id,
                                task=self.env.robot.name, domain=self.env.variant.name)

    def close(self) -> None:
        """Release the store (an unfinished episode is discarded, committed ones stay)."""
        self.store.close()


def lead_astray(env: sim.MirrorEnv, expert: sim.ScriptedExpert, obs: dict[str, np.ndarray], steps: int,
                missing: bool = False) -> dict[str, np.ndarray]:
    """Step the env `steps` times with the expert aiming at a wrong goal (or, `missing`, beside the object), then
    point it back at the real one: the observation to start a recovery demo from (a fresh reset if the detour
    happened to end the episode)."""
    expert.reset(failing=not missing, missing=missing)
    for _ in range(steps):
        obs, _, success, truncated, _ = env.step(expert.act(obs))
        if success or truncated:
            obs, _ = env.reset()
            break
    expert.reset()
    return obs


def make_task_env(task: str, variant: str | Mapping[str, Any], cameras: Sequence[str] | None,
                  image_size: int | Sequence[int] | None, task_settings: Mapping[str, Any] | None) -> sim.MirrorEnv:
    """The mirror with the task's settings, where explicit cameras and image size win over `task_settings`."""
    settings = dict(task_settings or {})
    if cameras is not None:
        settings["cameras"] = tuple(cameras)
    if image_size is not None:
        settings["image_size"] = image_size
    return sim.make_env(task, variant=variant, **settings)


def mirror_cameras(image_shapes: Mapping[str, Sequence[int]], owner: str) -> dict[str, Any]:
    """`sim.make_env` / `make_vec_env` keyword arguments that render the cameras of `image_shapes`
    {"image_<camera>": (H, W, 3)} at their size ({} without cameras). A mirror renders one size: sizes that differ are
    a UserError naming `owner`."""
    sizes = {key: tuple(int(n) for n in shape[:2]) for key, shape in image_shapes.items()}
    if len(set(sizes.values())) > 1:
        raise UserError(f"{owner} reads cameras at several sizes {sizes}; a mirror renders one size")
    if not sizes:
        return {}
    return {"cameras": tuple(key.removeprefix("image_") for key in sizes), "image_size": next(iter(sizes.values()))}


def task_settings(task_cfg: DictConfig) -> dict[str, Any]:
    """The task group of a composed config as make_env keyword arguments (without `name`)."""
    settings = OmegaConf.to_container(task_cfg, resolve=True)
    settings.pop("name", None)
    return settings


def variant_params(variant_cfg: DictConfig) -> dict[str, Any]:
    """The variant group of a composed config as a plain mapping (name plus parameters)."""
    return OmegaConf.to_container(variant_cfg, resolve=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("out"):
        raise UserError("give the store to write: robot-rl collect task=PushCube episodes=50 out=ROOT")
    return collect(task=cfg.task.name, out=cfg.out, episodes=int(cfg.episodes), variant=variant_params(cfg.variant),
                   noise=float(cfg.expert.noise), fail_prob=float(cfg.expert.fail_prob), seed=int(cfg.seed),
                   task_settings=task_settings(cfg.task), progress=bool(cfg.progress),
                   recovery_steps=int(cfg.expert.recovery_steps), recovery_from=str(cfg.expert.recovery_from))

"""`robot-rl evaluate task=... checkpoint=expert|CKPT variant=... episodes=N`: success and return in a sim mirror.

`evaluate_policy(...)` is the plain function that training callbacks, `robot-rl demo` and the tests call. A checkpoint
runs through the chunk scheduler of the policy contract; its spec picks the task, cameras and image size.

`steer.k=K steer.data=ROOT` runs a checkpoint with value-guided steering (V-GPS, `robot_rl.eval.steering`): a
chunked-TD critic is fitted for it on the episodes in ROOT (its own logged episodes and demos), then every chunk is the
best of K samples by that critic. Base and steered policy run through the same step loop (`ChunkActor`), so
`steer.k=1` is the base itself: compare the two on the same `seed` to measure what steering buys.

`record=ROOT` writes every evaluated episode to an episode store (created, or appended to with the same schema), as
the robot's recorder would: `source=policy` (`scripted` for the expert), `policy_id` the checkpoint as given, so
`robot-rl rank candidates=[...]` with the same path finds a candidate's own episodes; `policy_action` is the
policy's proposal, `action` what ran (with `action_noise`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

import sim
from robot_rl.errors import UserError
from robot_rl.workflows.collect import EpisodeRecorder, make_task_env, mirror_cameras, task_settings, variant_params


@dataclass
class SteerSettings:
    """Value-guided steering of a checkpoint (see the module docstring); `k` = 0: off."""

    k: int = 0
    data: str | None = None  # episode store the critic is fitted on
    keep: int | None = 8  # score only the `keep` samples nearest the K samples' mean (None: all K)
    temperature: float = 0.0  # 0: argmax; > 0: sample from softmax(Q / temperature)
    evaluator: Any = None  # its critic's EvaluatorConfig (None: the defaults with horizon 8)


def evaluate_policy(task: str | None, policy: str = "expert", episodes: int = 20,
                    variant: str | Mapping[str, Any] = "nominal", scheduler: str = "open_loop", seed: int = 0,
                    noise: float = 0.0, fail_prob: float = 0.0, n_action_steps: int | None = None,
                    task_settings: Mapping[str, Any] | None = None, progress: bool = True,
                    ddim_steps: int | None = None, action_noise: float = 0.0,
                    steer: SteerSettings | None = None, record: str | Path | None = None) -> dict[str, Any]:
    """Roll `policy` ("expert" or a checkpoint path) out for `episodes` episodes; returns success_rate, mean_return,
    mean_length, episodes (and task, variant, policy). `noise`/`fail_prob` tune the expert; `scheduler` and
    `n_action_steps` the chunk scheduler of a checkpoint, `ddim_steps` a diffusion checkpoint's sampling steps.
    `action_noise`: Gaussian noise of that std (normalized action units) on every executed action, clipped to the
    action range: how a policy does when run with exploration noise, as logged data often is. `steer`: run the
    checkpoint steered by a critic (the result then carries `steer`: k, keep, the critic's value of the base).
    `record`: an episode store to write every episode to (see the module docstring)."""
    steer = steer or SteerSettings()
    if steer.k < 0:
        raise UserError(f"steer.k={steer.k} must be >= 0 (0: no steering, K: best of K sampled chunks)")
    if steer.temperature < 0:
        raise UserError(f"steer.temperature={steer.temperature} must be >= 0 (0: the critic's best chunk)")
    if steer.k and (policy == "expert" or not steer.data):
        raise UserError("steering needs a policy checkpoint (checkpoint=CKPT) and the episodes to fit its critic on "
                        "(steer.data=ROOT)")
    if episodes < 1:
        raise UserError(f"episodes={episodes} must be at least 1")
    if action_noise < 0:
        raise UserError(f"action_noise={action_noise} must be >= 0 (std of the noise on each action)")
    if policy == "expert":
        if not task:
            raise UserError("give the task to evaluate the expert on, e.g. robot-rl evaluate task=PushCube")
        env = make_task_env(task, variant, None, None, task_settings)
        expert = sim.make_expert(task, noise=noise, fail_prob=fail_prob, seed=seed, action_mode=env.robot.action_mode)
        act, reset, close = expert.act, lambda seed: expert.reset(), lambda: None
    elif steer.k:
        env, act, reset, close, steering = _steered_actor(policy, task, variant, n_action_steps, task_settings,
                                                          ddim_steps, steer, seed, progress)
    else:
        env, act, reset, close = _checkpoint_actor(policy, task, variant, scheduler, n_action_steps, task_settings,
                                                   ddim_steps)
    noise_rng = np.random.default_rng(seed)
    returns, lengths, successes = [], [], 0
    policy_id = policy if not steer.k else f"{policy}|steer.k={steer.k}"
    recorder = None
    try:
        if record is not None:
            recorder = EpisodeRecorder(record, env, policy_id, "scripted" if policy == "expert" else "policy")
        for episode in tqdm(range(episodes), desc=f"evaluate {env.robot.name}", unit="ep", file=sys.stderr,
                            disable=not progress):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            reset(seed + episode)
            total, t, done, success = 0.0, 0, False, False
            while not done:
                proposal = action = np.asarray(act(obs), np.float32)
                if action_noise > 0:
                    action = np.clip(action + noise_rng.normal(0.0, action_noise, np.shape(action)), -1.0, 1.0)
                next_obs, reward, success, truncated, _ = env.step(action)
                if recorder is not None:
                    recorder.step(obs, action, proposal, reward, success, truncated, t / env.robot.control_hz)
                obs, total, t, done = next_obs, total + reward, t + 1, success or truncated
            if recorder is not None:
                recorder.end(success)
            returns.append(total)
            lengths.append(t)
            successes += int(success)
    finally:
        try:
            close()
            env.close()
        finally:
            if recorder is not None:
                recorder.close()
    result = {"success_rate": successes / episodes, "mean_return": float(np.mean(returns)),
              "mean_length": float(np.mean(lengths)), "episodes": episodes, "task": env.robot.name,
              "variant": env.variant.name, "policy": policy}
    if steer.k:
        result["steer"] = steering
    return result


def _steered_actor(path: str, task: str | None, variant: str | Mapping[str, Any], n_action_steps: int | None,
                   task_settings: Mapping[str, Any] | None, ddim_steps: int | None, steer: SteerSettings, seed: int,
                   progress: bool) -> tuple[sim.MirrorEnv, Callable, Callable, Callable, dict[str, Any]]:
    """The checkpoint's env, and (act, reset, close) of the checkpoint steered by a critic fitted for it on
    `steer.data`, with what steering used."""
    from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
    from robot_rl.eval.steering import SteeredPolicy
    from robot_rl.workflows.candidates import Candidate, ChunkActor
    from robot_rl.workflows.rank import load_cache

    env, policy = _checkpoint_env(path, task, variant, task_settings, ddim_steps)
    candidate = Candidate(path, policy)
    try:
        # steering scores chunks without their episode step: no time limit
        critic_cfg = replace(steer.evaluator or EvaluatorConfig(horizon=8), time_limit=None)
        cache, _ = load_cache(steer.data, critic_cfg.obs_key, critic_cfg.encoder.image_keys, "steer.evaluator")
        critic = ChunkedTDEvaluator(critic_cfg, cache)
        for name, key in zip(critic.image_names, critic.image_keys):  # the mirror must show what the critic reads
            shown = env.robot.obs_spec.get(name, (None,))[0]
            if tuple(shown or ()) != tuple(cache.spec[key][0]):
                raise UserError(f"the steering critic reads {key} {tuple(cache.spec[key][0])} but {path} runs a "
                                f"mirror showing {name} as {shown}; set steer.evaluator.encoder.image_keys to cameras "
                                "the checkpoint reads, at its image size")
        if progress:
            print(f"[evaluate] fitting the steering critic on {steer.data} ({cache.num_episodes} episodes)",
                  file=sys.stderr)
        estimate = critic.fit(candidate)
        steered = SteeredPolicy(candidate, critic, k=steer.k, temperature=steer.temperature,
                                keep=None if steer.keep is None else min(steer.keep, steer.k), seed=seed)
    except BaseException:
        env.close()
        raise
    spec = candidate.spec
    keys = (*spec.obs_keys, critic.state_name, *critic.image_names)
    actor = ChunkActor(steered, spec.n_obs_steps, n_action_steps or spec.n_action_steps, candidate.policy.reset,
                       keys=tuple(dict.fromkeys(keys)))
    steering = {"k": steer.k, "keep": steered.keep, "temperature": steer.temperature, "data": str(steer.data),
                "critic_value": estimate.value}
    return env, actor, actor.reset, lambda: None, steering


def _checkpoint_actor(path: str, task: str | None, variant: str | Mapping[str, Any], mode: str,
                      n_action_steps: int | None, task_settings: Mapping[str, Any] | None,
                      ddim_steps: int | None) -> tuple[sim.MirrorEnv, Callable, Callable, Callable]:
    """The env a checkpoint was made for, and (act, reset, close) that run it through the chunk scheduler."""
    from robot_rl.policies import ChunkScheduler  # lazy: torch only when a checkpoint is evaluated

    env, policy = _checkpoint_env(path, task, variant, task_settings, ddim_steps)
    runner = ChunkScheduler(policy, mode=mode, n_action_steps=n_action_steps)
    return env, lambda obs: runner.step(obs)[0], runner.reset, runner.close


def _checkpoint_env(path: str, task: str | None, variant: str | Mapping[str, Any],
                    task_settings: Mapping[str, Any] | None, ddim_steps: int | None) -> tuple[sim.MirrorEnv, Any]:
    """The checkpoint's policy and the mirror it was made for (its task, cameras and image size), checked against
    each other."""
    from robot_rl.policies import load_policy  # lazy: torch only when a checkpoint is evaluated

    if not Path(path).is_file():
        raise UserError(f"policy {path!r} is neither 'expert' nor a checkpoint file; give policy=expert or a path")
    policy = load_policy(path, ddim_steps=ddim_steps)
    spec = policy.spec
    task = task or spec.task
    if not task:
        raise UserError(f"{path} does not record its task; give task=NAME")
    cameras = mirror_cameras({key: spec.obs_shapes[key] for key in spec.image_keys()}, path)
    env = make_task_env(task, variant, cameras.get("cameras", ()), cameras.get("image_size"), task_settings)
    obs_shapes = {key: shape for key, (shape, _) in env.robot.obs_spec.items() if key in spec.obs_keys}
    spec.check_matches(task=task, action_dim=env.robot.action_dim, obs_shapes=obs_shapes, source=path)
    if abs(spec.rate_hz - env.robot.control_hz) > 1e-6:
        raise UserError(f"{path} runs at {spec.rate_hz} Hz but {task} is controlled at {env.robot.control_hz} Hz; "
                        f"set task.control_hz={spec.rate_hz}")
    return env, policy


def run(cfg: DictConfig) -> dict[str, Any]:
    task_cfg = cfg.get("task")
    return evaluate_policy(task=task_cfg.name if task_cfg is not None else None, policy=str(cfg.checkpoint),
                           episodes=int(cfg.episodes), variant=variant_params(cfg.variant),
                           scheduler=str(cfg.scheduler), seed=int(cfg.seed), noise=float(cfg.expert.noise),
                           fail_prob=float(cfg.expert.fail_prob), n_action_steps=cfg.get("n_action_steps"),
                           task_settings=task_settings(task_cfg) if task_cfg is not None else None,
                           progress=bool(cfg.progress), ddim_steps=cfg.get("ddim_steps"),
                           action_noise=float(cfg.action_noise), steer=steer_settings(cfg.get("steer")),
                           record=cfg.get("record"))


def steer_settings(cfg: DictConfig | None) -> SteerSettings:
    """`steer.*` of the evaluate config as SteerSettings (its `evaluator` as the rank verb reads one)."""
    if cfg is None:
        return SteerSettings()
    from omegaconf import OmegaConf

    from robot_rl.workflows.rank import evaluator_config  # lazy: JAX only when steering

    values = OmegaConf.to_container(cfg, resolve=True)
    critic = values.pop("evaluator", {})
    known = {f.name for f in fields(SteerSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown steer setting(s) {unknown}; known: {sorted(known)}")
    settings = SteerSettings(**values)
    return replace(settings, evaluator=evaluator_config(critic)) if settings.k else settings  # JAX only if steering

"""`robot-rl bench residual task=... recipe=...`: env steps for residual RL to lift an imperfect base to success.

The base is made once per config and cached (`cache_dir/base-<hash>`): scripted demos, then a short diffusion
training that leaves it usefully imperfect. The recipe then trains on top of it with those demos in the replay, and
the last line reports the success before and after, the env steps used, the steps to the first evaluation at or
above 90%, and the base and the best evaluation's checkpoint on held-out episodes. These runs take tens of minutes
on a CPU: a benchmark, never a test.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robot_rl.errors import UserError
from robot_rl.files import write_json
from robot_rl.policies import PolicyConfig, TrainConfig
from robot_rl.policies.expert_base import EXPERT, ExpertSpec
from robot_rl.rl.config import load_recipe
from robot_rl.rl.loop import LoopConfig
from robot_rl.rl.takeover import TakeoverConfig
from robot_rl.workflows.collect import collect
from robot_rl.workflows.train_base import train_base
from robot_rl.workflows.train_residual import check_episode_steps, evaluate_residual, train_residual

BASE_SUCCESS = (0.3, 0.7)  # an imperfect base leaves room to improve, and is good enough to improve on


def cached_base(task: str, base_cfg: dict[str, Any], cache_dir: str | Path) -> tuple[Path, Path, float]:
    """(checkpoint, demo store, base success on 50 nominal episodes), made once per (task, base config)."""
    key = hashlib.sha256(json.dumps({"task": task, **base_cfg}, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) / f"base-{task}-{key}"
    checkpoint, demos, info = root / "base" / "policy.safetensors", root / "demos", root / "base_info.json"
    if info.exists():
        return checkpoint, demos, json.loads(info.read_text())["success"]
    if not demos.exists():
        collect(task, demos, int(base_cfg["demos"]), seed=int(base_cfg["demo_seed"]), progress=False)
    train_base(demos, root / "base", task=task, policy=PolicyConfig.from_dict(base_cfg["policy"]),
               train=TrainConfig.from_dict(base_cfg["train"]), progress=False)
    success = evaluate_residual(task, checkpoint, None, episodes=50)["success"]
    write_json(info, {"task": task, "success": success, "config": base_cfg})
    return checkpoint, demos, success


def base_settings(cfg: DictConfig) -> dict[str, Any]:
    """The diffusion base's settings for `cfg.task`: `base` with the task's `base_per_task` entry merged in."""
    return OmegaConf.to_container(OmegaConf.merge(cfg.base, cfg.base_per_task.get(str(cfg.task), {})), resolve=True)


def bench_base(cfg: DictConfig) -> tuple[Path | ExpertSpec, Path | None, float | None]:
    """The bench's base from `base_kind`: (checkpoint or expert spec, demo store, base success if known)."""
    if cfg.base_kind == EXPERT:  # the controlled base: the scripted expert off by a constant bias, no demos
        return ExpertSpec(tuple(float(b) for b in cfg.base_bias)), None, None
    if cfg.base_kind == "diffusion":
        checkpoint, demos, success = cached_base(str(cfg.task), base_settings(cfg), cfg.cache_dir)
        low, high = BASE_SUCCESS
        if not low <= success <= high:
            print(f"[bench residual] warning: the {cfg.task} base succeeds {success:.0%}, outside the {low:.0%}-"
                  f"{high:.0%} this bench wants: set base_per_task.{cfg.task} (fewer base.demos or base.train.steps "
                  "for a weaker base, more for a stronger one)", file=sys.stderr)
        return checkpoint, demos, success
    raise UserError(f"base_kind={cfg.base_kind!r}; use diffusion (a trained imperfect base) or expert")


def heldout_success(cfg: DictConfig, base: Path | ExpertSpec | None, best: str) -> dict[str, Any] | None:
    """The base and the run's best checkpoint on `heldout.episodes` nominal episodes that no evaluation saw: picking
    the best of several noisy evaluations flatters it, a fresh set does not."""
    episodes, seed = int(cfg.heldout.episodes), int(cfg.heldout.seed)
    if episodes <= 0:
        return None

    def success(residual: str | None) -> float:
        return evaluate_residual(str(cfg.task), base, residual, episodes, num_envs=int(cfg.eval.num_envs), seed=seed,
                                 n_action_steps=cfg.base_n_action_steps)["success"]

    return {"episodes": episodes, "seed": seed, "base": success(None) if base is not None else None,
            "best": success(best)}


def run(cfg: DictConfig) -> dict[str, Any]:
    recipe = load_recipe(str(cfg.recipe), **dict(cfg.overrides or {}))
    check_episode_steps(cfg.episode_steps)  # before a base is made and cached
    checkpoint, demos, base_success = bench_base(cfg)
    loop = LoopConfig(total_steps=int(cfg.steps), seed=int(cfg.seed), eval_every=int(cfg.eval.every),
                      eval_episodes=int(cfg.eval.episodes), checkpoint_every=0, resume=bool(cfg.resume))
    kind = "" if cfg.base_kind == "diffusion" else f"_{cfg.base_kind}"
    out = cfg.out or f"runs/bench_residual/{cfg.task}_{recipe.name}{kind}"
    summary = train_residual(str(cfg.task), checkpoint if recipe.enabled else None, recipe, loop, out,
                             demos=demos if recipe.demo_fraction > 0 else None, num_envs=int(cfg.num_envs),
                             eval_variants=list(cfg.eval.variants), eval_num_envs=int(cfg.eval.num_envs),
                             base_n_action_steps=cfg.base_n_action_steps, episode_steps=cfg.episode_steps,
                             takeover=TakeoverConfig(**OmegaConf.to_container(cfg.takeover, resolve=True)))
    base_success = summary["base_success"] if base_success is None else base_success
    return {"recipe": recipe.name, "task": str(cfg.task), "base": str(checkpoint) if recipe.enabled else None,
            "base_success": base_success,
            "final_success": summary["final_success"], "env_steps": summary["env_steps"],
            "best_success": summary["best_success"], "best_steps": summary["best_steps"],
            "heldout": heldout_success(cfg, checkpoint if recipe.enabled else None, summary["best_checkpoint"]),
            "steps_to_90": summary["steps_to_90"], "steps_to_95": summary["steps_to_95"],
            "curve": summary["curve"], "takeover": summary["takeover"],
            "takeover_share": summary["takeover_share"], "episode_steps": summary["episode_steps"],
            "resumed": summary["resumed"], "out": summary["out"]}

"""MuJoCo mirrors of the robots: tasks, domain variants, scripted experts, and gymnasium registration.

Importing `sim` registers `robot_rl/Reach-v0`, `robot_rl/PushCube-v0`, `robot_rl/PickPlace-v0` and
`robot_rl/BimanualHandover-v0`. The package imports only numpy, mujoco, gymnasium and yaml.
"""

from __future__ import annotations

import os

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "osmesa"  # camera images without a display; set before mujoco is imported

from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium  # noqa: E402

from sim.env import MirrorEnv  # noqa: E402
from sim.errors import SimError  # noqa: E402
from sim.expert import ScriptedExpert  # noqa: E402
from sim.robot import RobotInterface  # noqa: E402
from sim.settings import TaskSettings, load_settings, task_names  # noqa: E402
from sim.tasks import EXPERTS, TASKS  # noqa: E402
from sim.variants import PARAMETERS, Variant, load_variant, resolve_variant, variant_names  # noqa: E402

__all__ = ["PARAMETERS", "TASKS", "MirrorEnv", "RobotInterface", "ScriptedExpert", "SimError", "TaskSettings",
           "Variant", "gym_id", "load_settings", "load_variant", "make_env", "make_expert", "make_vec_env",
           "resolve_variant", "task_names", "variant_names"]


def gym_id(task: str) -> str:
    return f"robot_rl/{task}-v0"


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise SimError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")


def make_env(task: str, variant: str | Mapping[str, Any] | Variant = "nominal", seed: int | None = None,
             cameras: tuple[str, ...] | list[str] | None = None, image_size: int | tuple[int, int] | None = None,
             **settings: Any) -> MirrorEnv:
    """One mirror env (no wrappers). `settings` override configs/task/<task>.yaml (max_steps, action_mode, ...).

    With `seed`, the env is reset once with it, so the next `reset()` without a seed continues the same stream.
    """
    _check_task(task)
    env = MirrorEnv(task, variant=variant, cameras=cameras, image_size=image_size, **settings)
    if seed is not None:
        env.reset(seed=seed)
    return env


def make_vec_env(task: str, num_envs: int, variant: str | Mapping[str, Any] | Variant = "nominal",
                 vectorization_mode: str = "sync", same_step_reset: bool = False,
                 **settings: Any) -> gymnasium.vector.VectorEnv:
    """`num_envs` copies of a mirror stepped together (gymnasium vector API, autoreset after each episode end).

    "sync" steps them in this process, "async" in one subprocess each; `bench sim` measures both. With
    `same_step_reset` an env that ends resets in the same `step` call (gymnasium's SAME_STEP autoreset: learners
    never see a no-op reset step). Async envs that
    render start from a fresh interpreter (forkserver): a process forked after OSMesa has rendered deadlocks when it
    renders, so a script that uses them needs the usual `if __name__ == "__main__":` guard.
    """
    _check_task(task)
    if num_envs < 1:
        raise SimError(f"num_envs={num_envs} must be at least 1")
    fns = [lambda: MirrorEnv(task, variant=variant, **settings) for _ in range(num_envs)]
    mode = gymnasium.vector.AutoresetMode.SAME_STEP if same_step_reset else gymnasium.vector.AutoresetMode.NEXT_STEP
    if vectorization_mode == "sync":
        return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    if vectorization_mode == "async":
        context = "forkserver" if settings.get("cameras") else "fork"
        return gymnasium.vector.AsyncVectorEnv(fns, context=context, autoreset_mode=mode)
    raise SimError(f"vectorization_mode={vectorization_mode!r} is not known; use sync or async")


def make_expert(task: str, noise: float = 0.0, fail_prob: float = 0.0, seed: int | None = None,
                action_mode: str | None = None) -> ScriptedExpert:
    """The scripted expert of `task`; `action_mode` must match the env's (default: the task's setting)."""
    _check_task(task)
    if noise < 0 or not 0 <= fail_prob <= 1:
        raise SimError(f"expert noise={noise} must be >= 0 and fail_prob={fail_prob} within [0, 1]")
    return EXPERTS[task](noise=noise, fail_prob=fail_prob, seed=seed, action_mode=action_mode)


for _task in TASKS:
    if gym_id(_task) not in gymnasium.registry:
        gymnasium.register(gym_id(_task), entry_point="sim.env:MirrorEnv", kwargs={"task": _task})

"""`robot-rl train-base policy=diffusion data=ROOT [task=NAME]`: train a base policy from an episode store.

The training itself lives in `robot_rl.policies.training`; this module wires it to the command line and, when asked,
to success evaluation in the sim mirror (imported lazily, so training without evaluation never loads MuJoCo).
`train_base(...)` is the plain function that `robot-rl demo` and the tests call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError
from robot_rl.policies import PolicyConfig, TrainConfig, train_policy
from robot_rl.policies.dataset import store_task
from robot_rl.policies.training import Evaluator


def sim_evaluator(task: str, episodes: int, variant: str = "nominal", mode: str = "open_loop",
                  seed: int = 1000) -> Evaluator:
    """A callback that rolls a checkpoint out in the sim mirror and returns its success metrics."""
    from robot_rl.workflows.evaluate import evaluate_policy  # lazy: imports sim (MuJoCo)

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        result = evaluate_policy(task=task, policy=str(checkpoint), episodes=episodes, variant=variant,
                                 scheduler=mode, seed=seed, progress=False)
        return {key: result[key] for key in ("success_rate", "mean_return", "mean_length") if key in result}

    return evaluate


def train_base(data: str | Path, out: str | Path | None = None, task: str | None = None,
               policy: PolicyConfig | None = None, train: TrainConfig | None = None, eval_episodes: int = 0,
               eval_variant: str = "nominal", eval_mode: str = "open_loop", eval_seed: int = 1000,
               progress: bool = True) -> dict[str, Any]:
    """Train a base policy on the store at `data` and return {"checkpoint", "best_checkpoint", "task", "policy",
    "steps", metrics...}. With `eval_episodes > 0` the policy is rolled out in the sim mirror every
    `train.eval_every` steps (or only at the end when that is 0), and `best_checkpoint` is the most successful one."""
    policy = policy or PolicyConfig()
    train = train or TrainConfig()
    with EpisodeStore.open(data, mode="r") as store:
        task = store_task(store, task)
    out = Path(out) if out else Path("runs") / "train_base" / f"{task}_{policy.kind}"
    evaluate = sim_evaluator(task, eval_episodes, eval_variant, eval_mode, eval_seed) if eval_episodes > 0 else None
    result = train_policy(data, out, policy, train, task=task, evaluate=evaluate, progress=progress)
    return {"checkpoint": str(result.checkpoint),
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "task": task, "policy": policy.kind, "steps": result.steps, **result.metrics}


def run(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "data"):
        raise UserError("give the episode store to train on: robot-rl train-base data=ROOT [policy=diffusion]")
    train = OmegaConf.to_container(cfg.train, resolve=True)
    task_cfg = cfg.get("task")
    if task_cfg is not None:
        train["rate_hz"] = float(task_cfg.control_hz)
    train["eval_every"] = int(cfg.eval.every)
    return train_base(
        data=str(cfg.data),
        out=cfg.out,
        task=str(task_cfg.name) if task_cfg is not None else None,
        policy=PolicyConfig.from_dict(OmegaConf.to_container(cfg.policy, resolve=True)),
        train=TrainConfig.from_dict(train),
        eval_episodes=int(cfg.eval.episodes) or (10 if cfg.eval.every else 0),
        eval_variant=str(cfg.eval.variant),
        eval_mode=str(cfg.eval.mode),
        eval_seed=int(cfg.eval.seed),
        progress=bool(cfg.progress),
    )

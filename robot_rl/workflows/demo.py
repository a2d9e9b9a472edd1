"""`robot-rl demo` (behind `make demo`): the whole pipeline on small defaults, ending in `runs/<name>/report.md`.

Stages run in order and each adds a section to the report: an episode store checked end to end, scripted demos in a
sim mirror, a diffusion base trained on them, residual RL on that base, and an offline ranking of the policies it
produced, scored against rollouts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

import sim
from robot_rl.data import EpisodeStore, make_step_schema, validate
from robot_rl.workflows.data_tools import info
from robot_rl.workflows.report import Report


def data_stage(report: Report, run_dir: Path, episodes: int, seed: int) -> dict:
    """Record a small synthetic store (the store's own check: write, validate, read back) and report it."""
    rng = np.random.default_rng(seed)
    root = run_dir / "data" / "synthetic"
    schema = make_step_schema({"state": ((8,), "float32"), "image_front": ((32, 32, 3), "uint8")}, 4)
    store = EpisodeStore.create(root, schema)
    with store.writer() as writer:
        for e in range(episodes):
            length = int(rng.integers(20, 80))
            takeover = rng.random() < 0.3
            for t in range(length):
                human = takeover and length // 3 <= t < length // 2
                action = np.tanh(rng.standard_normal(4)).astype(np.float32)
                writer.add_step({
                    "obs/state": rng.standard_normal(8).astype(np.float32),
                    "obs/image_front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                    "action": action, "policy_action": action, "base_action": action,
                    "residual_action": np.zeros(4, np.float32),
                    "human_action": action if human else np.full(4, np.nan, np.float32),
                    "intervention": human, "reward": float(t == length - 1), "terminated": t == length - 1,
                    "truncated": False, "timestamp": time.time()})
            writer.end_episode(success=bool(rng.random() < 0.6), source=("scripted", "teleop", "policy")[e % 3],
                               task="Synthetic", policy_id="demo")
    store.close()
    checked = validate(str(root))
    summary = info(str(root))
    meta = EpisodeStore.open(root).meta
    fig, path = report.figure("data_episode_lengths")
    ax = fig.add_subplot(1, 1, 1)
    for source in ("scripted", "teleop", "policy"):
        ax.hist(meta["length"][meta["source"] == source], bins=10, alpha=0.6, label=source)
    ax.set_xlabel("episode length (steps)")
    ax.set_ylabel("episodes")
    ax.legend()
    report.add("Episode store", text=f"A synthetic store at `{root}`, written through the episode writer and checked "
               "by `robot-rl data validate` (every invariant).",
               table=[{"episodes": summary["episodes"], "steps": summary["steps"], "valid": checked["valid"],
                       "success_rate": summary["success_rate"], "intervened_steps": summary["interventions"],
                       **{f"source_{k}": v for k, v in summary["sources"].items()}}],
               images=[report.save_figure(fig, path)])
    return {"episodes": summary["episodes"], "steps": summary["steps"]}


def collect_stage(report: Report, run_dir: Path, cfg: DictConfig) -> dict:
    """Scripted demos in a sim mirror: the data the base policy learns from."""
    from robot_rl.workflows.collect import collect

    root = run_dir / "data" / "demos"
    result = collect(cfg.task, root, cfg.episodes, variant=cfg.variant, noise=cfg.noise, fail_prob=cfg.fail_prob,
                     seed=cfg.seed, progress=False)
    meta = EpisodeStore.open(root).meta
    fig, path = report.figure("collect_lengths")
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(meta["length"][meta["success"]], bins=15, alpha=0.7, label="success")
    ax.hist(meta["length"][~meta["success"]], bins=15, alpha=0.7, label="failure")
    ax.set_xlabel("episode length (steps)")
    ax.set_ylabel("demos")
    ax.legend()
    report.add("Demonstrations", text=f"The {cfg.task} scripted expert (noise {cfg.noise}, fail_prob {cfg.fail_prob}) "
               f"in the `{cfg.variant}` mirror, recorded to `{root}` with `source=scripted`.",
               table=[{k: result[k] for k in ("task", "variant", "episodes", "success_rate", "steps")}],
               images=[report.save_figure(fig, path)])
    return result


def base_stage(report: Report, run_dir: Path, demos: Path, cfg: DictConfig, task: str) -> dict:
    """Train a base policy on the demos, then measure its success in the mirror (the residual's starting point)."""
    from omegaconf import OmegaConf

    from robot_rl.policies import PolicyConfig, TrainConfig
    from robot_rl.workflows.evaluate import evaluate_policy
    from robot_rl.workflows.train_base import train_base

    policy = PolicyConfig.from_dict(OmegaConf.to_container(cfg.policy, resolve=True))
    train = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    result = train_base(demos, run_dir / "base", task=task, policy=policy, train=train, progress=False)
    evaluation = evaluate_policy(task, policy=result["checkpoint"], episodes=cfg.eval_episodes,
                                 scheduler=cfg.scheduler, progress=False)
    images = []
    metrics_file = run_dir / "base" / "metrics.json"
    if metrics_file.exists():
        import json

        history = json.loads(metrics_file.read_text())  # one entry per validation
        points = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h and "step" in h]
        if points:
            fig, path = report.figure("base_val_loss")
            ax = fig.add_subplot(1, 1, 1)
            ax.plot(*zip(*points), marker="o")
            ax.set_xlabel("training step")
            ax.set_ylabel("validation loss")
            images.append(report.save_figure(fig, path))
    row = {"policy": policy.kind, "train_steps": result["steps"], "checkpoint": result["checkpoint"],
           "success_rate": evaluation["success_rate"], "mean_length": evaluation["mean_length"],
           "episodes": evaluation["episodes"]}
    report.add("Base policy", text=f"A {policy.kind} policy trained on the demos (train/validation split by episode, "
               f"EMA weights), then rolled out {cfg.eval_episodes} times in the nominal mirror through the "
               f"{cfg.scheduler} chunk scheduler.", table=[row], images=images)
    return row


def residual_stage(report: Report, run_dir: Path, base: str, demos: Path, cfg: DictConfig, task: str) -> dict:
    """Residual RL on the base just trained, with its demos in the replay; the learning curve goes in the report."""
    from robot_rl.rl.config import load_recipe
    from robot_rl.rl.loop import LoopConfig
    from robot_rl.workflows.train_residual import train_residual

    recipe = load_recipe(cfg.recipe, **dict(cfg.overrides or {}))
    loop = LoopConfig(total_steps=int(cfg.steps), seed=int(cfg.seed), eval_every=int(cfg.eval_every),
                      eval_episodes=int(cfg.eval_episodes), checkpoint_every=int(cfg.checkpoint_every))
    out = run_dir / "residual"
    summary = train_residual(task, base, recipe, loop, out, demos=demos, num_envs=int(cfg.num_envs),
                             eval_variants=list(cfg.eval_variants), eval_num_envs=int(cfg.eval_num_envs),
                             progress=False)
    row = {"recipe": recipe.name, "env_steps": summary["env_steps"], "base_success": summary["base_success"],
           "final_success": summary["final_success"],
           **{k: v for k, v in summary.items() if k.startswith("success/")},
           "online_episodes": summary["online_episodes"], "steps_to_90": summary["steps_to_90"]}
    image = str((out / "learning_curve.png").relative_to(run_dir))
    report.add("Residual RL", text=f"Residual `{recipe.name}` on top of the frozen base, {summary['env_steps']} online "
               f"steps over {cfg.num_envs} mirrors, demos in the replay (symmetric sampling). Success is measured "
               f"every {cfg.eval_every} steps on {cfg.eval_episodes} episodes per variant; every online episode is "
               f"in `{summary['rollouts']}`.", table=[row], images=[image])
    return summary


def demo_candidates(base: str, residual: dict) -> dict[str, str]:
    """What the demo produced, label -> candidate spec: the base, the base with its last residual, and with the best
    evaluation's residual when that is neither the untrained one (step 0: the base itself) nor the last."""
    candidates = {"base": base, "base + residual": f"{base}+{residual['checkpoint_dir']}"}
    if 0 < residual["best_steps"] < residual["env_steps"]:
        candidates[f"base + best residual ({residual['best_steps']} steps)"] = f"{base}+{residual['best_checkpoint']}"
    return candidates


def rank_stage(report: Report, run_dir: Path, base: str, residual: dict, cfg: DictConfig, task: str) -> dict:
    """Rank what the demo produced (`demo_candidates`) from the residual run's logged rollouts alone, then score that
    ranking against rollouts in the mirror (both within the task's episode limit)."""
    from robot_rl.eval.chunked_td import EvaluatorConfig
    from robot_rl.eval.model_based import ModelConfig
    from robot_rl.workflows.rank import format_table, rank_policies

    labels = {spec: label for label, spec in demo_candidates(base, residual).items()}
    candidates = list(labels)
    evaluator = EvaluatorConfig(updates=int(cfg.updates), updates_per_call=min(500, int(cfg.updates)),
                                time_limit=sim.load_settings(task).max_steps)
    model = ModelConfig(enabled=int(cfg.model_updates) > 0, updates=int(cfg.model_updates),
                        updates_per_call=min(500, max(1, int(cfg.model_updates))))
    result = rank_policies(candidates, residual["rollouts"], evaluator=evaluator, truth="sim",
                           truth_episodes=int(cfg.truth_episodes), out=run_dir / "rank", progress=False, model=model)
    rows = [{"candidate": labels[r["name"]], "rank": r["rank"],
             "estimate": r["estimate"], "pessimistic": r["pessimistic"], "spread": r["spread"], "fqe": r["fqe"],
             **({"model": r["model"]} if "model" in r else {}), "true (sim)": r.get("true")}
            for r in result["candidates"]]
    images = [str(p.relative_to(run_dir)) for p in sorted((run_dir / "rank").glob("*.png"))]
    report.add("Offline ranking", text="Each candidate valued from the residual run's logged rollouts alone (a "
               "chunked-TD critic per candidate; per-step FQE and the model-based estimate beside it), then rolled out "
               f"{cfg.truth_episodes} times in the mirror for the true discounted value.", table=rows, images=images)
    print(format_table(result), file=sys.stderr)
    return {"candidates": rows}


def run(cfg: DictConfig) -> dict:
    name = cfg.name or time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir = Path(cfg.runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    report = Report(run_dir, f"robot_rl demo: {name}")
    results = {}
    print("[demo] stage: episode store", file=sys.stderr)
    results["data"] = data_stage(report, run_dir, cfg.data.episodes, cfg.seed)
    print("[demo] stage: collect demos in the sim mirror", file=sys.stderr)
    results["collect"] = collect_stage(report, run_dir, cfg.collect)
    print("[demo] stage: train and evaluate a base policy", file=sys.stderr)
    results["base"] = base_stage(report, run_dir, Path(results["collect"]["out"]), cfg.base, cfg.collect.task)
    print("[demo] stage: residual RL on the base", file=sys.stderr)
    results["residual"] = residual_stage(report, run_dir, results["base"]["checkpoint"],
                                         Path(results["collect"]["out"]), cfg.residual, cfg.collect.task)
    print("[demo] stage: rank the policies offline", file=sys.stderr)
    results["rank"] = rank_stage(report, run_dir, results["base"]["checkpoint"], results["residual"], cfg.rank,
                                 cfg.collect.task)
    path = report.write()
    print(f"[demo] report: {path}", file=sys.stderr)
    return {"run_dir": str(run_dir), "report": str(path), **results}

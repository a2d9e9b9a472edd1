"""`robot-rl train-residual task=... base=CKPT [demos=ROOT] [residual=ours]`: residual RL in a sim mirror.

Wires the concrete parts into `robot_rl.rl.loop.train`: vectorized mirrors (same-step reset), the frozen torch base
policy batched over the envs (`BatchedChunkPolicy`), demos from an episode store (their base actions relabelled by
running the base along each demo, since scripted demos carry none), periodic evaluation on `nominal` and chosen
variants, checkpoints, CSV and TensorBoard logs, a learning-curve PNG, and every online episode written to an episode
store (`source=policy`, with base and residual actions) so the evaluator and the ranking can use it.
`train_residual(...)` is the plain function that `robot-rl demo`, the benchmark and the tests call.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_rl.data import EpisodeStore, ReplayCache, make_step_schema
from robot_rl.data.replay import newest_that_fit
from robot_rl.errors import UserError
from robot_rl.files import write_atomic, write_json
from robot_rl.policies.expert_base import EXPERT, ExpertBase, ExpertSpec
from robot_rl.rl.agent import observation_stats
from robot_rl.rl.checkpoint import latest_checkpoint, read_checkpoint
from robot_rl.rl.config import AgentConfig, EncoderConfig
from robot_rl.rl.loop import LoopConfig, best_dir, evaluate, train
from robot_rl.rl.replay import EpisodeReplay, replay_spec
from robot_rl.rl.takeover import ExpertTakeover, TakeoverConfig

OBS_KEY = "state"  # the flat vector the learner reads (images go to the base policy only)


@functools.lru_cache(maxsize=4)
def _checked_policy(path: str, task: str, mtime_ns: int):
    """The checkpoint loaded and checked against the task once per file version: a run's training, evaluation and
    relabelling bases share it (each wrapper keeps its own per-env state and sampling noise)."""
    import sim
    from robot_rl.policies import load_policy

    policy = load_policy(path)
    robot = sim.make_env(task).robot
    obs_shapes = {key: shape for key, (shape, _) in robot.obs_spec.items() if key in policy.spec.obs_keys}
    policy.spec.check_matches(task=task, action_dim=robot.action_dim, obs_shapes=obs_shapes, source=path)
    return policy


def load_base(path: str | Path | ExpertSpec, task: str, num_envs: int, n_action_steps: int | None = None):
    """The frozen base policy as a batched callable over `num_envs` envs, after checking it fits the task;
    `n_action_steps` (default: the policy's) sets how many actions of each chunk run before the base replans. An
    `ExpertSpec` gives the task's scripted expert (plus its bias) instead of a checkpoint."""
    from robot_rl.policies.batched import BatchedChunkPolicy

    if isinstance(path, ExpertSpec):
        return ExpertBase(task, num_envs, path.bias)
    if not Path(path).is_file():
        raise UserError(f"base checkpoint {str(path)!r} does not exist; train one with `robot-rl train-base` and give "
                        "base=PATH/policy.safetensors")
    policy = _checked_policy(str(path), task, Path(path).stat().st_mtime_ns)
    return BatchedChunkPolicy(policy, num_envs, n_action_steps)


def relabel_base_actions(episodes: Sequence[dict[str, np.ndarray]], base_path: str | Path, task: str,
                         n_action_steps: int | None = None) -> list:
    """The base actions along each demo: the base runs open loop along the recorded observations (all demos in
    lockstep, one batched inference per chunk), exactly as it would have acted at those states."""
    base = load_base(base_path, task, len(episodes), n_action_steps)
    longest = max(len(e["reward"]) for e in episodes)
    out = [np.zeros_like(e["action"]) for e in episodes]
    for t in range(longest):
        obs = np.stack([e[f"obs/{OBS_KEY}"][min(t, len(e["reward"]) - 1)] for e in episodes])
        actions = base({OBS_KEY: obs})
        for i, e in enumerate(episodes):
            if t < len(e["reward"]):
                out[i][t] = actions[i]
    return out


def load_demos(root: str | Path, task: str, base_path: str | Path | None, n_action_steps: int | None = None,
               image_shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[list[dict], list[str]]:
    """Demo episodes of `task` as replay episodes (obs, action, base_action, reward, terminated, intervention, and
    the camera images of `image_shapes` {"image_<camera>": (H, W, 3)} when the recipe reads cameras)."""
    image_shapes = image_shapes or {}
    with EpisodeStore.open(root, mode="r") as store:
        key = f"obs/{OBS_KEY}"
        if key not in store.schema:
            raise UserError(f"demo store {root} has no {key!r}; the learner reads the state vector")
        for image, shape in image_shapes.items():
            found = store.schema.get(f"obs/{image}")
            if found is None or tuple(found.shape) != tuple(shape):
                have = "none" if found is None else f"{tuple(found.shape)}"
                raise UserError(f"demo store {root} has obs/{image} of shape {have}, the learner reads {tuple(shape)}; "
                                f"collect demos with cameras=[{image.removeprefix('image_')}] and image_size="
                                f"{shape[0]}, or set image_size to match")
        tasks = {str(t) for t in store.meta["task"]} - {""}
        if tasks and task not in tasks:
            raise UserError(f"demo store {root} holds {', '.join(sorted(tasks))} episodes, not {task}; give demos of "
                            f"{task}")
        episodes = [store.episode(i) for i in range(store.num_episodes)]
        sources = [str(s) for s in store.meta["source"]]
    if not episodes:
        raise UserError(f"demo store {root} has no episodes; collect some with `robot-rl collect`")
    if base_path is not None:  # always relabel: a recorded base_action is some other policy's (a scripted demo
        # records the expert's action there), never necessarily this base's
        for episode, actions in zip(episodes, relabel_base_actions(episodes, base_path, task, n_action_steps)):
            episode["base_action"] = actions
    if base_path is None:  # SAC from scratch has no base: its base action is zero
        for episode in episodes:
            episode["base_action"] = np.zeros_like(episode["action"])
    return [replay_episode(e, image_shapes) for e in episodes], sources


def replay_episode(steps: dict[str, np.ndarray], image_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A store episode (its keys) as a replay episode (`replay_spec` keys: the flat state under "obs")."""
    length = len(steps["reward"])
    return {"obs": steps[f"obs/{OBS_KEY}"].astype(np.float32), "action": steps["action"].astype(np.float32),
            "base_action": steps["base_action"].astype(np.float32), "reward": steps["reward"].astype(np.float32),
            "terminated": steps["terminated"].astype(bool),
            "intervention": steps["intervention"].astype(bool) if "intervention" in steps else np.zeros(length, bool),
            **{image: steps[f"obs/{image}"].astype(np.uint8) for image in image_shapes}}


def load_rollouts(store: EpisodeStore, capacity: int,
                  image_shapes: dict[str, tuple[int, ...]]) -> list[dict[str, np.ndarray]]:
    """The newest of a run's recorded online episodes that fit a replay of `capacity` steps, oldest first, as replay
    episodes: what a resumed run's replay held when it stopped (their base actions are this run's base's)."""
    ends = np.concatenate([[0], store.episode_ends]).astype(np.int64)
    first = newest_that_fit(np.diff(ends), capacity)
    keys = [f"obs/{OBS_KEY}", "action", "base_action", "reward", "terminated", "intervention",
            *(f"obs/{image}" for image in image_shapes)]
    steps = store.read_steps(int(ends[first]), int(ends[-1]), keys)
    return [replay_episode({k: v[start - ends[first]:stop - ends[first]] for k, v in steps.items()}, image_shapes)
            for start, stop in zip(ends[first:-1], ends[first + 1:])]


def resume_point(out: Path, loop: LoopConfig, num_envs: int, episode_steps: int | None) -> dict[str, Any]:
    """The meta of the checkpoint a `resume` run continues from ({} for a fresh run), after checking the run can
    go on: a fresh run never writes into a folder that holds one, and a resumed one needs a checkpoint behind the
    steps it is asked for, taken with the same number of envs and the same training episode limit."""
    checkpoint = latest_checkpoint(loop.checkpoint_dir)
    holds_run = checkpoint is not None or EpisodeStore.exists(out / "rollouts") or (out / "eval.csv").exists()
    if not loop.resume:
        if holds_run:
            raise UserError(f"{out} already holds a run; give a new out=DIR, or resume=true to continue that run")
        return {}
    if checkpoint is None:
        if holds_run:
            raise UserError(f"resume=true, but {loop.checkpoint_dir} has no checkpoint to continue from (the run "
                            "stopped before its first: set checkpoint_every=N to keep some); give a new out=DIR")
        return {}
    meta = read_checkpoint(checkpoint)[1]["meta"]
    if meta["env_steps"] != meta["iteration"] * num_envs:
        stepped = meta["env_steps"] // max(meta["iteration"], 1)
        raise UserError(f"resume=true: the run stepped {stepped} envs at a time; resume it with num_envs={stepped}")
    check_resumed_limit(out, meta, episode_steps)
    if loop.total_steps <= meta["env_steps"]:
        raise UserError(f"resume=true: the run is already at {meta['env_steps']} env steps; give steps= more than "
                        "that")
    return meta


def check_resumed_limit(out: Path, meta: dict[str, Any], episode_steps: int | None) -> None:
    """A resumed run must train under the episode limit it trained under. Checkpoints record it; for one from before
    they did, a finished run's summary.json does, and otherwise the limit is unknown (a warning, not a refusal)."""
    if "episode_steps" in meta:
        trained = meta["episode_steps"]
    else:
        summary = out / "summary.json"
        recorded = json.loads(summary.read_text()) if summary.is_file() else {}
        if "episode_steps" not in recorded:
            print(f"[train-residual] resume: {out} does not record the episode limit it trained under; continuing "
                  f"with episode_steps={episode_steps if episode_steps is not None else 'null'}", file=sys.stderr)
            return
        trained = recorded["episode_steps"]
    if trained != episode_steps:
        value = "null" if trained is None else trained
        raise UserError(f"resume=true: the run trained with episode_steps={value}; resume it with "
                        f"episode_steps={value}")


def restore_replay(replay: EpisodeReplay, rollouts: Path, capacity: int,
                   image_shapes: dict[str, tuple[int, ...]]) -> int:
    """Refill a resumed run's replay with its recorded online episodes (the newest that fit), after the demos, as
    the replay held them when the run stopped, and count them all as its online episodes (those recorded past the
    checkpoint too: real experience, kept). Returns how many it put back."""
    with EpisodeStore.open(rollouts, mode="r") as store:
        episodes = load_rollouts(store, capacity, image_shapes)
        for episode in episodes:
            replay.add_episode(episode, "policy")
        replay.online_episodes += store.num_episodes
    return len(episodes)


class RolloutWriter:
    """Every online episode into an episode store: what the robot did, the base's action and the residual's, and
    who took over (a simulated takeover is recorded as a real one)."""

    def __init__(self, root: Path, obs_dim: int, action_dim: int, task: str, domain: str, policy_id: str,
                 image_shapes: dict[str, tuple[int, ...]] | None = None, append: bool = False):
        self.images = tuple(image_shapes or {})
        obs_spec = {OBS_KEY: ((obs_dim,), "float32"),
                    **{image: (tuple(shape), "uint8") for image, shape in (image_shapes or {}).items()}}
        schema = make_step_schema(obs_spec, action_dim)
        self.store = EpisodeStore.create(root, schema, exist_ok=append)
        self.writer = self.store.writer()
        self.writer.__enter__()
        self.fields = {"task": task, "domain": domain, "policy_id": policy_id}
        self.episodes = 0

    def __call__(self, steps: dict[str, np.ndarray], env: int) -> None:
        length = len(steps["reward"])
        now = time.time()
        for t in range(length):
            self.writer.add_step({
                f"obs/{OBS_KEY}": steps["obs"][t], "action": steps["action"][t],
                "policy_action": steps["policy_action"][t], "base_action": steps["base_action"][t],
                "residual_action": steps["residual_action"][t], "human_action": steps["human_action"][t],
                "intervention": steps["intervention"][t], "reward": steps["reward"][t],
                "terminated": steps["terminated"][t], "truncated": steps["truncated"][t],
                "timestamp": now, **{f"obs/{image}": steps[image][t] for image in self.images}})
        self.writer.end_episode(success=bool(steps["terminated"][-1]), source="policy", **self.fields)
        self.episodes += 1

    def close(self) -> None:
        self.writer.__exit__(None, None, None)
        self.store.close()


class RunLog:
    """CSV files (log.csv, eval.csv) and TensorBoard events for the loop's records; a line per evaluation."""

    def __init__(self, out: Path, progress: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.out, self.progress = out, progress
        self.tb = SummaryWriter(str(out / "tensorboard"))
        self.files: dict[str, tuple[Any, csv.DictWriter]] = {}

    def __call__(self, kind: str, record: dict) -> None:
        step = int(record["env_steps"])
        for key, value in record.items():
            if key != "env_steps" and isinstance(value, int | float):
                self.tb.add_scalar(f"{kind}/{key}", value, step)
        if kind not in self.files:
            handle = open(self.out / f"{kind}.csv", "a", newline="")  # noqa: SIM115 - open for the run, closed in close()
            writer = csv.DictWriter(handle, fieldnames=list(record), extrasaction="ignore")
            if handle.tell() == 0:
                writer.writeheader()
            self.files[kind] = (handle, writer)
        handle, writer = self.files[kind]
        writer.writerow(record)
        handle.flush()
        if kind == "eval" and self.progress:
            variants = " ".join(f"{k.split('/')[1]}={v:.2f}" for k, v in record.items() if k.startswith("success/"))
            print(f"[train-residual] {step} env steps: success {record['success']:.2f} {variants}", file=sys.stderr)

    def truncate(self, env_steps: int) -> list[dict[str, float]]:
        """For a resumed run, before its first record: drop the CSV rows made after `env_steps` (the stopped run made
        them past its last checkpoint; the resumed run makes them again) and return the evaluations kept."""
        kept: dict[str, list[dict[str, str]]] = {"log": [], "eval": []}
        for kind in kept:
            path = self.out / f"{kind}.csv"
            if not path.exists():
                continue
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                kept[kind] = [row for row in reader if int(float(row["env_steps"])) <= env_steps]
                fields = list(reader.fieldnames or [])
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept[kind])
            write_atomic(path, text.getvalue().encode())
        return [{key: int(float(value)) if key == "env_steps" else float(value) for key, value in row.items()
                 if value != ""} for row in kept["eval"]]

    def close(self) -> None:
        self.tb.close()
        for handle, _ in self.files.values():
            handle.close()


def random_states(envs, steps: int, seed: int) -> np.ndarray:
    """States visited under uniformly random actions: the standardization sample when there are no demos."""
    obs, _ = envs.reset(seed=seed)
    states = [obs[OBS_KEY]]
    for _ in range(steps):
        obs, *_ = envs.step(envs.action_space.sample())
        states.append(obs[OBS_KEY])
    return np.concatenate(states)


def plot_learning_curve(evals: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [e["env_steps"] for e in evals]
    names = [k for k in evals[0] if k.startswith("success/")] or ["success"]
    for name in names:
        ax.plot(steps, [e[name] for e in evals], marker="o", label=name.removeprefix("success/"))
    ax.set_xlabel("online env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def steps_to(evals: list[dict], level: float) -> int | None:
    """Env steps at the first evaluation whose success reached `level`."""
    return next((int(e["env_steps"]) for e in evals if e["success"] >= level), None)


def gate_against_base(base: str | Path, checkpoint_dir: str | Path, data: str | Path, margin: float,
                      updates: int, seed: int = 0, time_limit: int | None = None,
                      encoder: EncoderConfig | None = None) -> dict[str, Any]:
    """The deployment gate (RL-100 style) for a freshly trained residual: one chunked-TD evaluator, fitted on the
    logged data for the deployed policy (the base) and for base + residual; the residual passes only if its
    pessimistic value beats the base's by `margin`. `time_limit`: the episode step limit the data ran under;
    `encoder`: the recipe's, so that a residual reading cameras is valued by a critic reading them too."""
    from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
    from robot_rl.eval.gate import DeploymentGate
    from robot_rl.workflows.candidates import load_candidates
    from robot_rl.workflows.rank import load_cache

    encoder = encoder or EncoderConfig()
    cameras = dataclasses.replace(encoder, image_keys=[f"obs/{k}" for k in encoder.image_keys])  # as stored
    cfg = EvaluatorConfig(updates=updates, updates_per_call=min(500, updates), time_limit=time_limit, seed=seed,
                          encoder=cameras)
    cache, _ = load_cache(data, cfg.obs_key, cameras.image_keys)
    evaluator = ChunkedTDEvaluator(cfg, cache)
    deployed, candidate = load_candidates([str(base), f"{base}+{checkpoint_dir}"], seed)
    decision = DeploymentGate(margin).decide(evaluator.fit(candidate), evaluator.fit(deployed))
    return {"accept": decision.accept, "candidate": decision.candidate, "deployed": decision.deployed,
            "margin": decision.margin, "reason": decision.reason}


def check_episode_steps(episode_steps: int | None) -> None:
    """Refuse a training time limit below one step before any work starts."""
    if episode_steps is not None and int(episode_steps) < 1:
        raise UserError(f"episode_steps={episode_steps}: give a positive number of control steps, or null for the "
                        "task's time limit")


def train_residual(task: str, base: str | Path | None, recipe: AgentConfig, loop: LoopConfig, out: str | Path,
                   demos: str | Path | None = None, num_envs: int = 8, variant: str = "nominal",
                   eval_variants: Sequence[str] = ("nominal",), eval_num_envs: int = 10, rollouts: bool = True,
                   gate: dict[str, Any] | None = None, base_n_action_steps: int | None = None,
                   image_size: int = 84, takeover: TakeoverConfig | None = None,
                   episode_steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a residual on top of `base` (a policy checkpoint; None with `recipe.enabled=false`) in `task`'s mirror.
    Writes OUT/checkpoints (the last one, and in OUT/checkpoints/best the most successful evaluation's), OUT/log.csv,
    OUT/eval.csv, OUT/tensorboard, OUT/learning_curve.png, OUT/rollouts (an episode store) and OUT/summary.json;
    returns the summary. `gate={"margin": m, "updates": n}` also runs the deployment gate of the result against its
    base on the rollouts (summary["gate"]). A recipe that reads cameras (`encoder.image_keys`, e.g. ["image_front"])
    gets mirrors rendering them at `image_size` pixels, and demos and rollouts carry them. `takeover` (enabled) has
    the task's scripted expert supervise the training episodes and take over on drift (`robot_rl.rl.takeover`); its
    steps are recorded as interventions. `episode_steps` sets the training episodes' time limit (a truncation: the
    critic still bootstraps), e.g. shorter than the task's so stalled failures end sooner; evaluations keep the
    task's."""
    import sim

    if recipe.enabled and base is None:
        raise UserError("a residual needs its base policy: give base=PATH/policy.safetensors "
                        "(or residual=scratch for SAC from scratch)")
    base = None if not recipe.enabled else base
    check_episode_steps(episode_steps)
    episode_steps = None if episode_steps is None else int(episode_steps)
    if gate is not None and isinstance(base, ExpertSpec):
        raise UserError("the deployment gate values candidates built on a base checkpoint; base=expert has none "
                        "(set gate.enabled=false)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loop.obs_key = OBS_KEY
    loop.checkpoint_dir = loop.checkpoint_dir or str(out / "checkpoints")
    resumed = resume_point(out, loop, num_envs, episode_steps)
    start_iteration = resumed.get("iteration", 0)  # a resumed run's samplers draw anew, not its first draws again
    recorded = EpisodeStore.exists(out / "rollouts")  # before this run's writer makes one
    cameras = {"cameras": tuple(k.removeprefix("image_") for k in recipe.encoder.image_keys),
               "image_size": image_size} if recipe.encoder.image_keys else {}
    time_limit = {"max_steps": int(episode_steps)} if episode_steps is not None else {}
    envs = sim.make_vec_env(task, num_envs, variant, same_step_reset=True, **cameras, **time_limit)
    eval_envs = {name: sim.make_vec_env(task, eval_num_envs, name, same_step_reset=True, **cameras)
                 for name in eval_variants}
    image_shapes = {k: envs.single_observation_space[k].shape for k in recipe.encoder.image_keys}
    base_fn = load_base(base, task, num_envs, base_n_action_steps) if base is not None else None
    eval_base = load_base(base, task, eval_num_envs, base_n_action_steps) if base is not None else None
    obs_dim = envs.single_observation_space[OBS_KEY].shape[0]
    action_dim = envs.single_action_space.shape[0]
    supervisor = None
    if takeover is not None and takeover.enabled:
        supervisor = ExpertTakeover(ExpertBase(task, num_envs, seed=loop.seed + 1000 + start_iteration), num_envs,
                                    takeover)

    with contextlib.ExitStack() as stack:
        writer = None
        if rollouts:  # a resumed run appends to its own store
            writer = RolloutWriter(out / "rollouts", obs_dim, action_dim, task, variant, f"{recipe.name}:{out.name}",
                                   image_shapes, append=bool(resumed))
            stack.callback(writer.close)
        cache = ReplayCache(loop.replay_capacity, replay_spec(obs_dim, action_dim, image_shapes=image_shapes))
        replay = EpisodeReplay(cache, recipe, num_envs, loop.seed + start_iteration, on_episode=writer)
        demo_rewards, demo_states = [], []
        if demos is not None:
            episodes, sources = load_demos(demos, task, base, base_n_action_steps, image_shapes)
            for episode, source in zip(episodes, sources):
                replay.add_episode(episode, source)
                demo_rewards.append(episode["reward"])
                demo_states.append(episode["obs"])
        log = RunLog(out, progress)
        stack.callback(log.close)
        earlier_evals, resumed_from = [], None
        if resumed:
            earlier_evals = log.truncate(resumed["env_steps"])
            if recorded:
                put_back = restore_replay(replay, out / "rollouts", loop.replay_capacity, image_shapes)
            else:
                put_back = 0
                print(f"[train-residual] resuming without {out / 'rollouts'} (the run kept none): the replay starts "
                      "from the demos alone", file=sys.stderr)
            resumed_from = {"env_steps": resumed["env_steps"], "replay_episodes": put_back}
            if recipe.obs_stats is None:  # the statistics its networks learned with, even if the demos grew since
                recipe = dataclasses.replace(recipe, obs_stats=resumed["agent"]["obs_stats"])
        if recipe.obs_stats is None:  # standardize the state on the demos' states (or random ones without demos)
            states = np.concatenate(demo_states) if demo_states else random_states(envs, 100, loop.seed)
            recipe = dataclasses.replace(recipe, obs_stats=observation_stats(states))
        result = train(envs, recipe, loop, base=base_fn, replay=replay, eval_envs=eval_envs, eval_base=eval_base,
                       demo_rewards=demo_rewards, on_record=log, supervisor=supervisor,
                       run_meta={"episode_steps": episode_steps})
    envs.close()
    for e in eval_envs.values():
        e.close()

    evals = earlier_evals + result.evals
    plot_learning_curve(evals, out / "learning_curve.png", f"{recipe.name} on {task}")
    summary = {
        "task": task, "recipe": recipe.name, "base": str(base) if base else None,
        "base_success": evals[0]["success"] if evals and evals[0]["env_steps"] == 0 else None,
        "final_success": evals[-1]["success"], "env_steps": result.env_steps,
        "best_success": result.best["success"], "best_steps": result.best["env_steps"],
        "best_checkpoint": str(best_dir(loop.checkpoint_dir)),
        "steps_to_90": steps_to(evals, 0.9), "steps_to_95": steps_to(evals, 0.95),
        "curve": [[e["env_steps"], e["success"]] for e in evals],
        **{k: v for k, v in evals[-1].items() if k.startswith("success/")},
        "demo_episodes": len(demo_rewards), "online_episodes": replay.online_episodes,
        "takeover": asdict(takeover) if supervisor is not None else None,
        "takeover_share": result.takeover_share, "episode_steps": episode_steps, "resumed": resumed_from,
        "checkpoint_dir": loop.checkpoint_dir, "rollouts": str(writer.store.root) if writer else None,
        "out": str(out), "loop": asdict(loop),
    }
    if gate is not None and base is not None and writer is not None:
        summary["gate"] = gate_against_base(base, loop.checkpoint_dir, writer.store.root, float(gate["margin"]),
                                            int(gate["updates"]), loop.seed,
                                            time_limit=episode_steps or sim.load_settings(task).max_steps,
                                            encoder=recipe.encoder)
    write_json(out / "summary.json", summary)
    return summary


def evaluate_residual(task: str, base: str | Path | ExpertSpec | None, residual: str | Path | None, episodes: int,
                      variant: str = "nominal", num_envs: int = 10, seed: int = 0,
                      n_action_steps: int | None = None) -> dict[str, float]:
    """Success of `base` (None: zero actions, for SAC from scratch) with the residual checkpoint `residual` on top
    (None: the base alone), batched over vector envs the way `train_residual` evaluates: on the same `seed`, a run's
    best checkpoint scores what its evaluation did; on another seed, held out."""
    import sim
    from robot_rl.workflows.candidates import load_residual
    from robot_rl.workflows.collect import mirror_cameras

    actor = load_residual(residual) if residual is not None else None  # a bad path fails before any env exists
    agent, state = (actor.agent, actor.state) if actor is not None else (None, None)
    cameras = mirror_cameras(actor.image_shapes, f"residual {residual}") if actor is not None else {}
    envs = sim.make_vec_env(task, num_envs, variant, same_step_reset=True, **cameras)  # what the residual reads
    try:
        base_fn = load_base(base, task, num_envs, n_action_steps) if base is not None else None
        return evaluate(envs, episodes, base_fn, agent, state, obs_key=OBS_KEY, seed=seed)
    finally:
        envs.close()


def run(cfg: DictConfig) -> dict[str, Any]:
    task_cfg = cfg.get("task")
    if task_cfg is None:
        raise UserError("give the task: robot-rl train-residual task=PushCube base=CKPT [demos=ROOT]")
    recipe = AgentConfig.from_dict(OmegaConf.to_container(cfg.residual, resolve=True))
    loop = LoopConfig(total_steps=int(cfg.steps), seed=int(cfg.seed), eval_every=int(cfg.eval.every),
                      eval_episodes=int(cfg.eval.episodes), log_every=int(cfg.log_every),
                      replay_capacity=int(cfg.replay_capacity), checkpoint_every=int(cfg.checkpoint_every),
                      resume=bool(cfg.resume))
    out = cfg.out or f"runs/train_residual/{task_cfg.name}_{recipe.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    base = ExpertSpec(tuple(float(b) for b in cfg.base_bias or ())) if cfg.base == EXPERT else cfg.base
    return train_residual(task=str(task_cfg.name), base=base, recipe=recipe, loop=loop, out=out,
                          demos=cfg.demos, num_envs=int(cfg.num_envs), variant=str(cfg.variant),
                          eval_variants=list(cfg.eval.variants), eval_num_envs=int(cfg.eval.num_envs),
                          rollouts=bool(cfg.rollouts), progress=bool(cfg.progress),
                          gate=OmegaConf.to_container(cfg.gate) if cfg.gate.enabled else None,
                          base_n_action_steps=cfg.base_n_action_steps, image_size=int(cfg.image_size),
                          episode_steps=cfg.episode_steps,
                          takeover=TakeoverConfig(**OmegaConf.to_container(cfg.takeover, resolve=True)))

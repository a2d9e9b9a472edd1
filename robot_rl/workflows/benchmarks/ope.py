"""`robot-rl bench ope`: offline policy selection on PushCube, and value-guided steering, against rolled-out truth.

1. Candidates: BC-MLP chunk policies trained on expert demos of different quality, size and training length (the
   `recipes`), so their true values spread from failing to near expert. Demos, policies and true values are cached
   under `cache_dir` by their settings: a second run reuses them.
2. Logged data, a mix of sources: noisy scripted demos (`source=scripted`), and a few episodes of every candidate run
   with exploration noise, some of them supervised by the scripted expert, which takes over when the policy's proposal
   drifts from what it would do (`drift_threshold` for `drift_patience` steps) and keeps control to the episode's end
   (`intervention`, `human_action`, `policy_action` recorded as a robot's takeover would be).
3. True values: each candidate rolled out `truth_episodes` times without noise or takeovers; value = mean discounted
   return within the task's episode limit, the quantity the estimators estimate (`time_limit`: they count returns
   within the same limit).
4. Estimators on the same data (`robot_rl.workflows.rank.rank_policies`): chunked TD, per-step FQE (horizon 1, same
   critic and budget), the Monte-Carlo return of each candidate's own logged episodes, and their blend (chunked TD
   moved toward the returns of each candidate's own episodes, `robot_rl.eval.blend`; with exploration noise above
   `blend_tolerance` (the default 0.1 is) the candidates' own episodes stop almost at once and the blend stays
   near chunked TD). Steps 2 and 4 repeat for
   `data_draws` draws of the logged data (logging seeds seed, seed + 1, ...: other initial states, noise and demos):
   with a few episodes per candidate one draw's ranking is largely luck, so the scores are means over draws.
   `leave_out`: each candidate is valued on the draw without its own episodes, as a policy that never ran would be
   (the evaluator's real use: Monte Carlo then knows nothing, and the critics must carry values across policies).
5. Steering: a stochastic diffusion base (`steer.*`), a chunked-TD critic (sized by `steer.critic`) fitted for it on its
   own logged episodes (`steer.logged_episodes`, no added noise: its samples are its exploration) with the scripted
   demos, and its success rate with and without best-of-K steering (among the `steer.keep` most typical samples), on
   the same initial states.
Last stdout line: {"n_policies", "data_draws", "chunked_td": {"spearman", "regret_at_1", "sharpe_at_3" (means over
draws), "per_draw": {same keys: lists}}, "fqe": {...}, "mc": {...}, "pessimistic": {...} (chunked TD ranked by its
ensemble minimum, the value the deployment gate compares), "blend": {...}, "steering": {...}, "targets_met"}. Full
scores, per-candidate values and plots go to `out` (draw 0) and `out/draw_N`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import sim
from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError
from robot_rl.eval.blend import BLEND_TOLERANCE
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
from robot_rl.eval.model_based import ModelConfig
from robot_rl.eval.steering import SteeredPolicy
from robot_rl.files import write_json
from robot_rl.policies import PolicyConfig, TrainConfig, load_policy, train_policy
from robot_rl.rl.takeover import DriftTakeover
from robot_rl.workflows.candidates import Candidate, ChunkActor, rollout_values
from robot_rl.workflows.collect import collect, make_task_env
from robot_rl.workflows.rank import evaluator_config, format_table, fqe_config, load_cache, rank_policies

TARGETS = {"spearman": 0.9, "regret_at_1": 0.05, "steering_gain_points": 5.0}
SCORE_KEYS = ("spearman", "regret_at_1", "sharpe_at_3")


@dataclass(frozen=True)
class Recipe:
    """One candidate: a policy trained on `demos` expert episodes of the given noise and failure rate for `steps`."""

    demos: int
    noise: float
    fail_prob: float
    steps: int
    kind: str = "bc"

    @property
    def name(self) -> str:
        return f"{self.kind}_d{self.demos}_n{self.noise:g}_f{self.fail_prob:g}_s{self.steps}"


def demo_store(cache_dir: Path, task: str, episodes: int, noise: float, fail_prob: float, seed: int) -> Path:
    """Expert demos of one quality, collected once (an incomplete store from an interrupted run is redone)."""
    root = cache_dir / "demos" / f"{task}_e{episodes}_n{noise:g}_f{fail_prob:g}_seed{seed}"
    if root.exists():
        with EpisodeStore.open(root) as store:
            if store.num_episodes == episodes:
                return root
        shutil.rmtree(root)
    collect(task, root, episodes, noise=noise, fail_prob=fail_prob, seed=seed, progress=False)
    return root


def train_candidate(cache_dir: Path, task: str, recipe: Recipe, horizon: int, seed: int,
                    policy_overrides: dict | None = None, lr: float = 5e-4) -> Path:
    """A trained policy checkpoint for `recipe`, reused when it exists (the folder name holds every setting: with
    `policy_overrides`, a hash of them and the learning rate)."""
    name = f"{task}_{recipe.name}_h{horizon}_seed{seed}"
    if policy_overrides:
        settings = json.dumps({"policy": policy_overrides, "lr": lr}, sort_keys=True)
        name += "_" + hashlib.sha256(settings.encode()).hexdigest()[:8]
    out = cache_dir / "policies" / name
    checkpoint = out / "policy.safetensors"
    if checkpoint.is_file():
        return checkpoint
    demos = demo_store(cache_dir, task, recipe.demos, recipe.noise, recipe.fail_prob, seed)
    values = {"kind": recipe.kind, "n_obs_steps": 1, "n_action_steps": horizon, **(policy_overrides or {})}
    train = TrainConfig(steps=recipe.steps, lr=lr, warmup_steps=min(100, recipe.steps // 5), seed=seed,
                        val_every=max(recipe.steps, 1), ckpt_every=max(recipe.steps, 1))
    train_policy(demos, out, PolicyConfig(**values), train, task=task, progress=False)
    return checkpoint


def logged_episode(writer: Any, env: Any, act: Callable, expert: Any, rng: np.random.Generator, noise: float,
                   takeover: bool, drift_threshold: float, drift_patience: int, policy_id: str, seed: int) -> None:
    """One policy episode with exploration noise; with `takeover`, the expert takes over on drift (to the end).
    `action` is what ran (the proposal plus noise, or the expert's), `policy_action` the policy's own proposal."""
    obs, _ = env.reset(seed=seed)
    act.reset(seed)
    expert.reset()
    dim = env.robot.action_dim
    no_human, zero = np.full(dim, np.nan, np.float32), np.zeros(dim, np.float32)
    rule = DriftTakeover(1, drift_threshold, drift_patience, hold=0)  # the expert keeps control to the end
    taken, t, done, success = False, 0, False, False
    while not done:
        proposal = np.clip(act(obs), -1, 1).astype(np.float32)
        explored = np.clip(proposal + rng.normal(0.0, noise, dim), -1, 1).astype(np.float32)
        human = no_human
        if takeover:
            expert_action = np.asarray(expert.act(obs), np.float32)
            taken = bool(rule(explored[None], expert_action[None])[0])
            human = expert_action if taken else no_human
        action = human if taken else explored
        next_obs, reward, success, truncated, _ = env.step(action)
        writer.add_step({"obs/state": obs["state"], "action": action, "policy_action": proposal,
                         "base_action": proposal, "residual_action": zero, "human_action": human,
                         "intervention": taken, "reward": reward, "terminated": success, "truncated": truncated,
                         "timestamp": t / env.robot.control_hz})
        obs, done, t = next_obs, success or truncated, t + 1
    writer.end_episode(success=bool(success), source="policy", policy_id=policy_id, task=env.robot.name,
                       domain=env.variant.name)


def episode_seed(seed: int, behaviour: int, episode: int) -> int:
    """The reset seed of one logged episode: a different logging `seed` draws other initial states (and other samples
    of a stochastic policy), not only other noise; apart from the truth rollouts' seeds (0, 1, ...)."""
    return 100_000 + 1_000_000 * seed + 1000 * behaviour + episode


def log_data(root: Path, task: str, behaviours: Sequence[tuple[str, Any]], demos: int, demo_noise: float,
             demo_fail_prob: float, episodes: int, takeover_fraction: float, noise: float, drift_threshold: float,
             drift_patience: int, seed: int, progress: bool) -> Path:
    """The logged store: scripted demos, then `episodes` of each behaviour (name, step actor), a share supervised."""
    if root.exists():
        shutil.rmtree(root)
    collect(task, root, demos, noise=demo_noise, fail_prob=demo_fail_prob, seed=seed, progress=False)
    env = make_task_env(task, "nominal", None, None, None)
    expert = sim.make_expert(task, noise=0.0, fail_prob=0.0, seed=seed, action_mode=env.robot.action_mode)
    rng = np.random.default_rng(seed)
    supervised = int(round(takeover_fraction * episodes))
    store = EpisodeStore.open(root, mode="a")
    try:
        with store.writer() as writer:
            for b, (name, actor) in enumerate(tqdm(behaviours, desc="logged data", file=sys.stderr,
                                                   disable=not progress)):
                for j in range(episodes):
                    logged_episode(writer, env, actor, expert, rng, noise, j < supervised, drift_threshold,
                                   drift_patience, name, seed=episode_seed(seed, b, j))
    finally:
        store.close()
        env.close()
    return root


def truth_values(cache_dir: Path, task: str, candidates: Sequence[Candidate], episodes: int, gamma: float,
                 seed: int, progress: bool) -> list[dict[str, float]]:
    """True values from rollouts, cached per (candidate, episodes, gamma, seed)."""
    path = cache_dir / "truth.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    env = make_task_env(task, "nominal", None, None, None)
    results = []
    for candidate in candidates:
        key = f"{candidate.name}|{episodes}|{gamma}|{seed}"
        if key not in known:
            actor = ChunkActor(candidate, 1, candidate.spec.n_action_steps, candidate.policy.reset)
            known[key] = rollout_values(actor, env, episodes, gamma, seed, desc="truth", progress=progress)
            write_json(path, known)
        results.append(known[key])
    env.close()
    return results


def bench_steering(base: Candidate, data: Path, task: str, evaluator: EvaluatorConfig, k: int, keep: int | None,
                   episodes: int, seed: int, progress: bool) -> dict[str, Any]:
    """Success of a stochastic base with and without best-of-k steering by a critic fitted for it on `data`."""
    cache, _ = load_cache(data, evaluator.obs_key)
    critic = ChunkedTDEvaluator(evaluator, cache)
    estimate = critic.fit(base)
    steered = SteeredPolicy(base, critic, k=k, keep=keep, seed=seed)
    env = make_task_env(task, "nominal", None, None, None)
    n_act = base.spec.n_action_steps
    results = {}
    for name, fn in (("base", base), ("steered", steered)):
        actor = ChunkActor(fn, base.spec.n_obs_steps, n_act, base.policy.reset)
        results[name] = rollout_values(actor, env, episodes, evaluator.gamma, seed + 7, desc=f"steering {name}",
                                       progress=progress)
    env.close()
    gain = 100 * (results["steered"]["success_rate"] - results["base"]["success_rate"])
    return {"k": k, "keep": keep, "base_success": results["base"]["success_rate"],
            "steered_success": results["steered"]["success_rate"], "gain_points": round(gain, 2),
            "base_value": results["base"]["value"], "steered_value": results["steered"]["value"],
            "critic_value": estimate.value, "episodes": episodes}


def summarize_draws(draws: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """{estimator: {metric: mean over draws, "per_draw": {metric: [one value per draw]}}} from one {estimator:
    {metric: value}} per data draw. An infinite Sharpe in one draw (zero spread in its top k) makes the mean
    infinite."""
    summary: dict[str, dict[str, Any]] = {}
    for name in draws[0]:
        per_draw = {key: [float(d[name][key]) for d in draws] for key in SCORE_KEYS}
        summary[name] = {**{key: float(np.mean(v)) for key, v in per_draw.items()}, "per_draw": per_draw}
    return summary


def draw_dir(out: Path, draw: int) -> Path:
    """Where data draw `draw` writes its logged store, ranking and plots: `out` for draw 0 (the paths the README
    names), `out/draw_N` for the others."""
    return out if draw == 0 else out / f"draw_{draw}"


def remove_stale_draws(out: Path, data_draws: int) -> None:
    """Delete the `out/draw_N` folders (N a number) an earlier run with more draws left, so `out` holds this run's
    draws only; nothing else in `out` is touched."""
    keep = {draw_dir(out, d) for d in range(data_draws)}
    for folder in out.glob("draw_*"):
        if folder.is_dir() and folder.name.removeprefix("draw_").isdigit() and folder not in keep:
            shutil.rmtree(folder)


def bench_ope(recipes: Sequence[Recipe], task: str = "PushCube", evaluator: EvaluatorConfig | None = None,
              baseline: EvaluatorConfig | None = None, cache_dir: str | Path = "runs/bench/ope/cache",
              out: str | Path = "runs/bench/ope", truth_episodes: int = 200, demos: int = 40,
              demo_noise: float = 0.3, demo_fail_prob: float = 0.3, episodes_per_candidate: int = 6,
              takeover_fraction: float = 0.5, noise: float = 0.1, drift_threshold: float = 0.3,
              drift_patience: int = 3, time_limit: bool = True, steer: dict | None = None, data_draws: int = 3,
              leave_out: bool = False, blend_tolerance: float = BLEND_TOLERANCE, model: ModelConfig | None = None,
              seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """The whole benchmark (see the module docstring); returns the summary dict printed as the last line."""
    if data_draws < 1:
        raise UserError(f"data_draws must be at least 1, got {data_draws}")
    evaluator = evaluator or EvaluatorConfig(horizon=8)
    baseline = baseline or fqe_config(evaluator)
    if time_limit:
        limit = sim.load_settings(task).max_steps
        evaluator, baseline = replace(evaluator, time_limit=limit), replace(baseline, time_limit=limit)
    cache_dir, out = Path(cache_dir), Path(out)
    checkpoints = [train_candidate(cache_dir, task, r, evaluator.horizon, seed)
                   for r in tqdm(recipes, desc="candidates", file=sys.stderr, disable=not progress)]
    candidates = [Candidate(str(c), load_policy(c, seed=seed)) for c in checkpoints]
    truth = truth_values(cache_dir, task, candidates, truth_episodes, evaluator.gamma, seed, progress)

    behaviours = [(c.name, ChunkActor(c, 1, c.spec.n_action_steps, c.policy.reset)) for c in candidates]
    steer = dict(steer or {})
    steer_base = None
    if steer.get("enabled", True):
        recipe = Recipe(*steer["recipe"], kind="diffusion")
        checkpoint = train_candidate(cache_dir, task, recipe, evaluator.horizon, seed,
                                     policy_overrides={"n_obs_steps": 2, "down_dims": [32, 64],
                                                       "prediction": steer["prediction"]}, lr=float(steer["lr"]))
        steer_base = Candidate(str(checkpoint), load_policy(checkpoint, seed=seed))
        steer_behaviour = (steer_base.name, ChunkActor(steer_base, 2, steer_base.spec.n_action_steps,
                                                        steer_base.policy.reset))
        behaviours.append(steer_behaviour)
    true_values = {c.name: t["value"] for c, t in zip(candidates, truth)}
    remove_stale_draws(out, data_draws)
    draws = []
    for draw in range(data_draws):
        draw_out = draw_dir(out, draw)
        data = log_data(draw_out / "logged", task, behaviours, demos, demo_noise, demo_fail_prob,
                        episodes_per_candidate, takeover_fraction, noise, drift_threshold, drift_patience,
                        seed + draw, progress)
        result = rank_policies(candidates, data, evaluator, baseline, truth=true_values, out=draw_out, seed=seed,
                               progress=progress, leave_out=leave_out, blend_tolerance=blend_tolerance, model=model)
        for row, t in zip(result["candidates"], truth):
            row.update(true_success=t["success_rate"])
        if progress:
            print(f"data draw {draw} (logging seed {seed + draw}):\n{format_table(result)}", file=sys.stderr)
        draws.append(result["scores"])
    summary: dict[str, Any] = {"n_policies": len(candidates), "data_draws": data_draws, **summarize_draws(draws)}
    if steer_base is not None:
        steer_data = log_data(out / "steer_logged", task, [steer_behaviour], demos, demo_noise, demo_fail_prob,
                              int(steer["logged_episodes"]), 0.0, 0.0, drift_threshold, drift_patience, seed, progress)
        keep = None if steer.get("keep") is None else int(steer["keep"])
        # The steering critic compares K alternatives at one state: no proximity weights (they narrow its fit to the
        # base's own proposal; measured +2.0 points with them vs +3.5 without) and no time limit (steps unknown);
        # `steer.critic` sizes it (one critic, fitted once: it can be larger than the ranking's).
        critic = evaluator_config({**asdict(evaluator), "time_limit": None, "proximity": None,
                                   **dict(steer.get("critic") or {})})
        summary["steering"] = bench_steering(steer_base, steer_data, task, critic, int(steer["k"]), keep,
                                             int(steer["episodes"]), seed, progress)
    ours, fqe = summary["chunked_td"], summary["fqe"]
    summary["targets_met"] = bool(
        ours["spearman"] >= TARGETS["spearman"] and ours["regret_at_1"] <= TARGETS["regret_at_1"]
        and ours["spearman"] > fqe["spearman"] and ours["regret_at_1"] <= fqe["regret_at_1"]
        and (steer_base is None or summary["steering"]["gain_points"] >= TARGETS["steering_gain_points"]))
    write_json(out / "summary.json", summary)
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    settings = cfg.quick_settings if cfg.quick else {}
    pick = lambda key: settings.get(key, cfg.get(key))  # noqa: E731
    recipes = [Recipe(*r) for r in pick("recipes")]
    evaluator = evaluator_config({**OmegaConf.to_container(cfg.evaluator, resolve=True),
                                  **dict(settings.get("evaluator", {}))})
    baseline = evaluator_config({**OmegaConf.to_container(cfg.baseline, resolve=True),
                                 **dict(settings.get("evaluator", {})), "horizon": 1})
    model = ModelConfig(**{**OmegaConf.to_container(cfg.model, resolve=True), **dict(settings.get("model", {}))})
    steer = OmegaConf.to_container(cfg.steer, resolve=True)
    steer.update(OmegaConf.to_container(settings.get("steer", {}), resolve=True) if settings else {})
    return bench_ope(recipes, task=cfg.task_name, evaluator=evaluator, baseline=baseline, cache_dir=cfg.cache_dir,
                     out=cfg.out, truth_episodes=int(pick("truth_episodes")), demos=int(cfg.demos),
                     demo_noise=float(cfg.demo_noise), demo_fail_prob=float(cfg.demo_fail_prob),
                     episodes_per_candidate=int(pick("episodes_per_candidate")),
                     takeover_fraction=float(cfg.takeover_fraction), noise=float(cfg.noise),
                     drift_threshold=float(cfg.drift_threshold), drift_patience=int(cfg.drift_patience),
                     time_limit=bool(cfg.time_limit), steer=steer, data_draws=int(pick("data_draws")),
                     leave_out=bool(cfg.leave_out), blend_tolerance=float(cfg.blend_tolerance), model=model,
                     seed=int(cfg.seed), progress=bool(cfg.progress))

"""`robot-rl rank candidates=[SPEC,...] data=ROOT [truth=sim|PATH.csv] [out=DIR] [leave_out=true]
[blend_tolerance=RMS]`: rank policies.

`rank_policies(...)` is the plain function that `robot-rl demo`, the OPE benchmark and the tests call. Per candidate it
fits a chunked-TD critic (estimate, pessimistic value, spread over the ensemble), and as baselines on the same data a
per-step FQE critic and the Monte-Carlo return of the candidate's own logged episodes (episodes whose `policy_id` is
the candidate's name; a candidate never logged gets the value of all logged data, i.e. no information). `blend`: the
chunked-TD estimate moved toward the returns of the candidate's own episodes by empirical Bayes (`robot_rl.eval.blend`:
small exploration noise corrected by the critic, cut at takeovers and larger noise; a candidate that never ran keeps its
estimate). With `leave_out` every candidate is valued as one never logged: its critics are fitted without its own
episodes (and nothing is blended). With true values (rolled out in a mirror, read from a CSV, or passed in) every
estimator is scored with `robot_rl.eval.ops`. `robot-rl rank method=sim2real ...` is the sim-to-real ranking of
`robot_rl.workflows.sim2real`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_rl.data import EpisodeStore, ReplayCache
from robot_rl.errors import UserError
from robot_rl.eval import ops
from robot_rl.eval.blend import (
    BLEND_TOLERANCE,
    blend,
    discounted_return,
    logged_steps,
    off_proposal_share,
    own_return,
)
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig, mc_value
from robot_rl.eval.model_based import DynamicsModel, ModelConfig, ModelEstimate, SuccessFn, task_success
from robot_rl.files import write_json
from robot_rl.workflows.candidates import Candidate, load_candidates, rollout_values

OFF_PROPOSAL_NOTE = 0.05  # the table notes candidates with more own steps off their proposals than this share


def fqe_config(evaluator: EvaluatorConfig) -> EvaluatorConfig:
    """The default per-step FQE baseline of an evaluator: the same critic and budget, horizon 1, transitions drawn by
    group as published FQE does (no proximity weights)."""
    return replace(evaluator, horizon=1, proximity=None)


def evaluator_config(values: Mapping[str, Any]) -> EvaluatorConfig:
    """An EvaluatorConfig from a config group (configs/evaluator/*.yaml); unknown keys are a UserError."""
    values = dict(values)
    known = {f.name for f in fields(EvaluatorConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown evaluator setting(s) {unknown}; known: {sorted(known)}")
    return EvaluatorConfig(**values)


def load_cache(data: str | Path, obs_key: str, image_keys: Sequence[str] = (),
               setting: str = "evaluator") -> tuple[ReplayCache, list[str]]:
    """The whole store in a replay cache (the keys the evaluators read: `obs_key`, the cameras in `image_keys`,
    actions, rewards, ends) and each episode's policy_id. `setting`: the config prefix errors name."""
    with EpisodeStore.open(data, mode="r") as store:
        names = [(obs_key, f"{setting}.obs_key"), *((k, f"{setting}.encoder.image_keys") for k in image_keys)]
        for key, name in names:
            if key not in store.schema:
                raise UserError(f"store {data} has no key {key!r} (its keys: {', '.join(store.schema)}); "
                                f"set {name} to keys it has")
        if store.num_episodes == 0:
            raise UserError(f"store {data} has no committed episode; record or collect some first")
        keys = [obs_key, *image_keys, "action", "reward", "terminated"]
        keys += [k for k in ("intervention", "policy_action") if k in store.schema]
        cache = ReplayCache.for_store(store, capacity=store.num_steps + 1, keys=keys)
        cache.sync(store)
        policy_ids = [str(p) for p in store.meta["policy_id"]]
    return cache, policy_ids


def logged_task(data: str | Path) -> str:
    """The task the logged episodes ran (the model-based estimate judges success with its mirror's test); episodes
    recorded without a task name count as that task's."""
    with EpisodeStore.open(data, mode="r") as store:
        tasks = sorted({str(t) for t in store.meta["task"]} - {""})
    if len(tasks) != 1:
        found = f"mixes episodes of tasks {tasks}" if tasks else "names no task in its episodes"
        raise UserError(f"store {data} {found}; the model-based estimate needs one mirror task's data: rank one "
                        "task's episodes (recorded with task=NAME), or set model.enabled=false")
    return tasks[0]


def model_estimates(model: ModelConfig, cache: ReplayCache, obs_key: str, candidates: Sequence[Candidate],
                    success: SuccessFn, gamma: float, limit: int) -> list[ModelEstimate]:
    """Fit one dynamics ensemble on `cache` and roll every candidate out in it from the cache's initial states."""
    dynamics = DynamicsModel(model, cache, obs_key)
    dynamics.fit()
    starts = cache.data[obs_key][cache.episode_starts()].reshape(cache.num_episodes, -1)
    return [dynamics.value(c, starts, success, gamma, limit, c.n_obs_steps, c.spec.n_action_steps)
            for c in candidates]


def mc_by_candidate(cache: ReplayCache, policy_ids: Sequence[str], names: Sequence[str], gamma: float
                    ) -> tuple[list[float], list[int]]:
    """Mean discounted return of each candidate's own logged episodes (and how many there were)."""
    starts = cache.episode_starts()  # in store order: the cache holds the whole store
    returns: dict[str, list[float]] = {}
    for policy_id, start in zip(policy_ids, starts):
        rewards = cache.data["reward"][start:start + int(cache.steps_left[start])]
        returns.setdefault(policy_id, []).append(discounted_return(rewards, gamma))
    everything = mc_value(cache, gamma)
    values = [float(np.mean(returns[n])) if n in returns else everything for n in names]
    return values, [len(returns.get(n, [])) for n in names]


def read_truth_csv(path: str | Path, names: Sequence[str]) -> list[float]:
    """True values from a CSV with `name,value` columns (header required); every candidate must have a row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"truth file {path} does not exist; give truth=sim or a CSV with name,value rows")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"name", "value"} <= set(rows[0]):
        raise UserError(f"truth file {path} needs a header with the columns name,value")
    table = {row["name"]: float(row["value"]) for row in rows}
    missing = [n for n in names if n not in table]
    if missing:
        raise UserError(f"truth file {path} has no row for candidate {missing[0]!r}")
    return [table[n] for n in names]


def sim_truth(candidates: Sequence[Candidate], task: str | None, variant: str | Mapping[str, Any], episodes: int,
              gamma: float, seed: int, progress: bool) -> list[dict[str, float]]:
    """Roll every candidate out in the mirror: discounted value (same gamma as the evaluators), success, length."""
    results = []
    for candidate in candidates:
        env = candidate.mirror(task, variant)
        actor = candidate.actor()
        try:
            results.append(rollout_values(actor, env, episodes, gamma, seed, desc=f"truth {candidate.name}",
                                          progress=progress))
        finally:
            actor.close()
            env.close()
    return results


def own_returns(critic: ChunkedTDEvaluator, proposals: np.ndarray, episodes: Sequence[int],
                tolerance: float) -> list[float]:
    """The return of each of a candidate's own `episodes` (indices in the critic's cache) until a takeover or a step
    more than `tolerance` off its proposal, corrected for smaller exploration noise and bootstrapped where it stops
    by `critic`, just fitted for the candidate (`eval.blend.own_return`); `proposals`: its chunks at the cache's valid
    slots (`policy_chunks`)."""
    cache, cfg = critic.cache, critic.cfg
    valid, starts = np.flatnonzero(cache.valid), cache.episode_starts()
    horizon, width = cfg.horizon, cfg.horizon * critic.action_dim

    def proposal(slot: int) -> np.ndarray:  # the candidate's chunk at a cache slot
        return proposals[np.searchsorted(valid, slot), :width]

    def q(slot: int, chunk: np.ndarray) -> float:
        slots = np.array([slot])
        return float(critic.q_values(critic.observation(slots), chunk.reshape(1, horizon, -1),
                                     cache.step[slots]).mean())

    returns = []
    for i in episodes:
        start = int(starts[i])
        length = int(cache.steps_left[start])

        def value_at(t: int, start: int = start) -> float:
            return q(start + t, proposal(start + t))

        def logged_value_at(t: int, ran: int, start: int = start) -> float:
            chunk = proposal(start + t).reshape(horizon, -1).copy()
            chunk[:ran] = cache.data["action"][start + t:start + t + ran].reshape(ran, -1)
            return q(start + t, chunk)

        value = own_return(cache.data["reward"][start:start + length], *logged_steps(cache, start, length), horizon,
                           cfg.gamma, value_at, logged_value_at, tolerance)
        if value is not None:
            returns.append(value)
    return returns


def rank_policies(candidates: Sequence[str | Candidate], data: str | Path, evaluator: EvaluatorConfig | None = None,
                  baseline: EvaluatorConfig | None = None, truth: str | Path | Mapping[str, float] | None = None,
                  task: str | None = None, variant: str | Mapping[str, Any] = "nominal", truth_episodes: int = 100,
                  out: str | Path | None = "runs/rank", seed: int = 0, progress: bool = True,
                  leave_out: bool = False, blend_tolerance: float = BLEND_TOLERANCE,
                  model: ModelConfig | None = None) -> dict[str, Any]:
    """Rank `candidates` (specs or loaded Candidates) on the store at `data`; see the module docstring.

    `model` (enabled): also the model-based estimate (`robot_rl.eval.model_based`: a dynamics ensemble fitted on the
    data, each candidate rolled out in it for the evaluator's time limit, or the task's episode limit without one),
    rows' `model`, `model_pessimistic` and `model_spread`. With `leave_out` it fits one ensemble per candidate. With
    cameras it is skipped (`model_note` says so): the model predicts states, not images.

    `leave_out`: value each candidate on the data without its own episodes, as if it had never run (how well the
    critics rank policies nobody has deployed yet). Its value is then the mean over the initial states of that data
    (its own episodes' starts left out too), and Monte Carlo, with nothing to go on, gives every candidate the mean
    return of all data (a constant: undefined rank correlation, regret 1). Each subset costs its critics a compile.

    `truth`: None, "sim", a CSV path, or {name: true value}. `baseline` (per-step FQE) defaults to `evaluator` with
    horizon 1 and no proximity weights. Returns {"candidates": [{name, estimate, pessimistic, spread, rank, fqe, mc,
    mc_episodes, blend, blend_weight, blend_returns (the returns of its own episodes the blend used), off_proposal
    (`eval.blend.off_proposal_share` of its own episodes, None without), data_episodes (the
    episodes its critics were fitted on)[, true]}], "behavior_value", "n_policies", "blend_tolerance", "leave_out"[,
    "scores": {estimator: ops.score_estimator(...)}], "out"}; writes ranking.json and plots to `out` (when not None).
    """
    evaluator = evaluator or EvaluatorConfig()
    baseline = baseline or fqe_config(evaluator)
    if blend_tolerance < 0:
        raise UserError(f"blend_tolerance must be >= 0 (RMS gap between an executed and a proposed action), got "
                        f"{blend_tolerance}")
    if truth is not None and not isinstance(truth, Mapping) and str(truth) != "sim":
        read_truth_csv(truth, [])  # a missing truth file fails before any work
    if candidates and all(isinstance(c, Candidate) for c in candidates):
        loaded = list(candidates)
    else:
        loaded = load_candidates([str(c) for c in candidates], seed)
    names = [c.name for c in loaded]
    cameras = dict.fromkeys([*evaluator.encoder.image_keys, *baseline.encoder.image_keys])  # both critics' cameras
    cache, policy_ids = load_cache(data, evaluator.obs_key, list(cameras))

    on_all = ChunkedTDEvaluator(evaluator, cache), ChunkedTDEvaluator(baseline, cache)
    modelled: list[ModelEstimate | None] = [None] * len(loaded)
    use_model, model_note = model is not None and model.enabled, None
    if use_model and cameras:  # a dynamics model of the state predicts no images
        use_model = False
        model_note = "model-based estimate skipped: the candidates read cameras, and the dynamics model predicts states"
    if use_model:
        import sim

        task_name = logged_task(data)
        success = task_success(task_name, int(np.prod(cache.spec[evaluator.obs_key][0])))
        limit = evaluator.time_limit or sim.load_settings(task_name).max_steps
        if not leave_out:
            modelled = model_estimates(model, cache, evaluator.obs_key, loaded, success, evaluator.gamma, limit)
    rows, returns = [], []
    for index, candidate in enumerate(_progress(loaded, progress, "rank")):
        chunked, fqe = on_all
        own = [i for i, p in enumerate(policy_ids) if p == candidate.name]
        if leave_out and own:
            kept = [i for i, p in enumerate(policy_ids) if p != candidate.name]
            if not kept:
                raise UserError(f"leave_out: every logged episode in {data} is candidate {candidate.name}'s own, so "
                                "nothing is left to value it on; log other policies too, or set leave_out=false")
            others = cache.select(kept)
            chunked, fqe = ChunkedTDEvaluator(evaluator, others), ChunkedTDEvaluator(baseline, others)
        if leave_out and use_model:
            modelled[index] = model_estimates(model, chunked.cache, evaluator.obs_key, [candidate], success,
                                              evaluator.gamma, limit)[0]
        longer = chunked if evaluator.horizon >= baseline.horizon else fqe
        proposals = longer.policy_chunks(candidate, np.flatnonzero(longer.cache.valid))  # one pass, both critics
        est, base = chunked.fit(candidate, proposals), fqe.fit(candidate, proposals)
        returns.append([] if leave_out else own_returns(chunked, proposals, own, blend_tolerance))
        rows.append({"name": candidate.name, "estimate": est.value, "pessimistic": est.pessimistic,
                     "off_proposal": off_proposal_share(cache, own, blend_tolerance),
                     "spread": est.spread, "fqe": base.value, "data_episodes": chunked.cache.num_episodes})
        if modelled[index] is not None:
            m = modelled[index]
            rows[index].update(model=m.value, model_pessimistic=m.pessimistic, model_spread=m.spread)
    behavior_value = mc_value(cache, evaluator.gamma)
    if leave_out:  # no candidate has episodes of its own: Monte Carlo knows nothing about any of them
        mc, mc_episodes = [behavior_value] * len(names), [0] * len(names)
    else:
        mc, mc_episodes = mc_by_candidate(cache, policy_ids, names, evaluator.gamma)
    order = np.argsort([-r["estimate"] for r in rows], kind="stable")
    for rank, i in enumerate(order, start=1):
        rows[i].update(rank=rank)
    blended, weights = blend([r["estimate"] for r in rows], returns)
    for row, value, count, b, w, used in zip(rows, mc, mc_episodes, blended, weights, returns):
        row.update(mc=value, mc_episodes=count, blend=float(b), blend_weight=float(w), blend_returns=used)
    result: dict[str, Any] = {"n_policies": len(rows), "behavior_value": behavior_value, "candidates": rows,
                              "blend_tolerance": blend_tolerance, "leave_out": leave_out}
    if model_note:
        result["model_note"] = model_note

    if truth is not None:
        if isinstance(truth, Mapping):
            true_values = [float(truth[n]) for n in names]
        elif str(truth) == "sim":
            rollouts = sim_truth(loaded, task, variant, truth_episodes, evaluator.gamma, seed, progress)
            true_values = [r["value"] for r in rollouts]
            for row, r in zip(rows, rollouts):
                row.update(true_success=r["success_rate"])
        else:
            true_values = read_truth_csv(truth, names)
        for row, value in zip(rows, true_values):
            row.update(true=value)
        estimates = {"chunked_td": [r["estimate"] for r in rows], "fqe": [r["fqe"] for r in rows], "mc": mc,
                     "pessimistic": [r["pessimistic"] for r in rows],  # what the deployment gate compares
                     "blend": [r["blend"] for r in rows]}
        if "model" in rows[0]:
            estimates["model"] = [r["model"] for r in rows]
        result["scores"] = {name: ops.score_estimator(true_values, est, result["behavior_value"])
                            for name, est in estimates.items()}
    if out is not None:
        result["out"] = str(write_outputs(Path(out), result))
    return result


def _progress(items: list, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="policy", file=sys.stderr, disable=not progress)


def format_table(result: dict[str, Any]) -> str:
    """The ranking as a fixed-width table, best first."""
    rows = sorted(result["candidates"], key=lambda r: r["rank"])
    width = max(12, *(len(r["name"]) for r in rows))
    has_truth, has_model = "true" in rows[0], "model" in rows[0]
    head = (f"{'rank':>4}  {'candidate':<{width}}  {'estimate':>8}  {'pessim.':>8}  {'spread':>7}  {'fqe':>7}  "
            f"{'mc':>7}  {'blend':>7}")
    lines = [head + ("  {:>7}".format("model") if has_model else "") + ("  {:>7}".format("true") if has_truth else "")]
    for r in rows:
        line = (f"{r['rank']:>4}  {r['name']:<{width}}  {r['estimate']:8.4f}  {r['pessimistic']:8.4f}  "
                f"{r['spread']:7.4f}  {r['fqe']:7.4f}  {r['mc']:7.4f}  {r['blend']:7.4f}")
        line += f"  {r['model']:7.4f}" if has_model else ""
        lines.append(line + (f"  {r['true']:7.4f}" if has_truth else ""))
    noisy = [r["name"] for r in rows if (r.get("off_proposal") or 0.0) > OFF_PROPOSAL_NOTE]
    if noisy and not result.get("leave_out"):
        lines.append(f"note: {', '.join(noisy)}: more than {OFF_PROPOSAL_NOTE:.0%} of their own logged steps ran "
                     f"further than blend_tolerance {result['blend_tolerance']:g} off their proposals (off_proposal), "
                     "so the blend cuts their episodes early and stays near the estimate; noise that large makes "
                     "logged episodes another policy's: log candidates as they run")
    if result.get("model_note"):
        lines.append(f"note: {result['model_note']}")
    for name, score in result.get("scores", {}).items():
        lines.append(f"{name:>11}: spearman {score['spearman']:.3f}  regret@1 {score['regret_at_1']:.3f}  "
                     f"regret@3 {score['regret_at_3']:.3f}  sharpe@3 {score.get('sharpe_at_3', float('nan')):.3f}")
    return "\n".join(lines)


def write_outputs(out: Path, result: dict[str, Any]) -> Path:
    """ranking.json, and with true values estimate_vs_true.png and top_k.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ranking.json", result)
    rows = result["candidates"]
    if "true" not in rows[0]:
        return out
    true = np.array([r["true"] for r in rows])
    series = {"chunked_td": [r["estimate"] for r in rows], "fqe": [r["fqe"] for r in rows],
              "mc": [r["mc"] for r in rows], "blend": [r["blend"] for r in rows]}
    if "model" in rows[0]:
        series["model"] = [r["model"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, est in series.items():
        ax.scatter(true, est, label=f"{name} (spearman {result['scores'][name]['spearman']:.2f})", s=18)
    low, high = float(min(true.min(), *map(min, series.values()))), float(max(true.max(), *map(max, series.values())))
    ax.plot([low, high], [low, high], "k:", lw=1)
    ax.set(xlabel="true value", ylabel="estimate", title="estimate vs true value")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "estimate_vs_true.png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for name, est in series.items():
        regret = ops.top_k_curve(ops.regret_at_k, true, est)
        best = ops.top_k_curve(ops.best_at_k, true, est)
        axes[0].plot(list(regret), list(regret.values()), marker="o", label=name)
        axes[1].plot(list(best), list(best.values()), marker="o", label=name)
    axes[0].set(xlabel="k", ylabel="regret@k (normalized)", title="regret of the top-k")
    axes[1].set(xlabel="k", ylabel="best true value in top-k", title="best@k")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "top_k.png")
    plt.close(fig)
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.method == "sim2real":
        from robot_rl.workflows.sim2real import run as run_sim2real

        return run_sim2real(cfg)
    if OmegaConf.is_missing(cfg, "data"):
        raise UserError("give the logged data: robot-rl rank candidates=[A.safetensors,B.safetensors] data=ROOT")
    candidates = [str(c) for c in (cfg.candidates or [])]
    result = rank_policies(
        candidates, data=str(cfg.data),
        evaluator=evaluator_config(OmegaConf.to_container(cfg.evaluator, resolve=True)),
        baseline=evaluator_config(OmegaConf.to_container(cfg.baseline, resolve=True)),
        truth=cfg.truth, task=cfg.task, variant=OmegaConf.to_container(cfg.variant, resolve=True),
        truth_episodes=int(cfg.truth_episodes), out=cfg.out, seed=int(cfg.seed), progress=bool(cfg.progress),
        leave_out=bool(cfg.leave_out), blend_tolerance=float(cfg.blend_tolerance),
        model=ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    print(format_table(result))
    return result

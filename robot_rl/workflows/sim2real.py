"""`robot-rl rank method=sim2real candidates=... real_data=ROOT`: rank sim-trained policies for a real robot.

For every candidate: its simulated success (rollouts in the `sim_variant` mirror), and how out of distribution the
fixed set of real observations in `real_data` looks in its feature space, by three detectors
(`robot_rl.eval.ood`): Mahalanobis, kNN and ensemble disagreement, each relative to held-out simulation episodes.
The combined score `z(sim success) - 0.25 * z(kNN OOD score)` (z: z-score over the candidates) ranks them; the
formula was chosen by the ablation of `robot-rl bench sim2real` over three targets (README).
With true target values (`truth=VARIANT`: rollouts in the mirror variant that stands in for the robot) each way of
ranking is scored: Spearman, Kendall, regret@1, MMRV.

`rank_sim2real(...)` is the plain function that the bench and the tests call.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError
from robot_rl.eval import ops
from robot_rl.eval.ood import METHODS, OODConfig, combine, consensus, ood_scores
from robot_rl.files import write_json
from robot_rl.policies import load_policy, read_policy_header
from robot_rl.policies.dataset import ChunkWindows, read_episodes
from robot_rl.workflows.report import Report
from robot_rl.workflows.sweep import CANDIDATE_FILE, Candidate, rollout_success

METRICS = ("spearman", "kendall", "regret_at_1", "mmrv")


@dataclass(frozen=True)
class Sim2RealConfig:
    """How candidates are scored and combined (`configs/rank/sim2real.yaml`)."""

    # the simulator "simulated success" is measured in: one variant for all candidates (nominal: the simulator as
    # modelled), or "training" = each candidate's own randomization setting (nominal for a bare checkpoint)
    sim_variant: Any = "nominal"
    sim_episodes: int = 100
    truth: Any = None  # a variant (name or mapping) whose rollouts are the true target values; None: no scoring
    truth_episodes: int = 100
    eval_seed: int = 555
    how: str = "zscore"  # standardization of both inputs of the combination: rank | zscore
    weight: float = 0.25  # weight of the OOD score against simulated success
    ood_source: str = "knn"  # the OOD score combined: mahalanobis | knn | ensemble | consensus (mean of all three)
    max_real_steps: int = 5000  # real observations used (a fixed random subset when the store holds more)
    ood: OODConfig = field(default_factory=OODConfig)


def resolve_candidates(candidates: str | Path | Sequence[str | Path]) -> list[Candidate]:
    """Candidate folders, sweep cache folders (every candidate under them) or policy checkpoints (their demo store
    is the one recorded in the checkpoint)."""
    items = [candidates] if isinstance(candidates, str | Path) else list(candidates)
    out: list[Candidate] = []
    for item in items:
        path = Path(str(item))
        if (path / CANDIDATE_FILE).is_file():
            out.append(Candidate.load(path))
        elif path.is_dir() and sorted(path.glob(f"*/{CANDIDATE_FILE}")):
            out += [Candidate.load(p.parent) for p in sorted(path.glob(f"*/{CANDIDATE_FILE}"))]
        elif path.is_file():
            info = read_policy_header(path).get("info", {})
            if not info.get("store"):
                raise UserError(f"checkpoint {path} does not record the store it was trained on; OOD scores need "
                                "that simulation data")
            out.append(Candidate(path.stem if path.stem not in ("policy", "best") else path.parent.name,
                                 path.parent, path, Path(info["store"]), {}))
        else:
            raise UserError(f"candidate {path} is neither a candidate folder, a sweep folder holding candidates, nor "
                            "a policy checkpoint")
    if len(out) < 2:
        raise UserError(f"ranking needs at least 2 candidates, got {len(out)}; give candidates=[A,B,...] or a sweep "
                        "folder")
    return out


def observation_windows(root: str | Path, obs_keys: tuple[str, ...], n_obs_steps: int, what: str
                        ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every step of a store as a policy's observation history: (obs {key: (N, n_obs, ...)}, actions, episode id)."""
    if not Path(str(root)).exists():
        raise UserError(f"{what} store {root} does not exist; give a path to an episode store")
    with EpisodeStore.open(root, mode="r") as store:
        missing = [f"obs/{k}" for k in obs_keys if f"obs/{k}" not in store.schema]
        if missing:
            raise UserError(f"{what} store {root} has no {', '.join(missing)}, which the candidates observe; record "
                            f"those keys or rank candidates that use: {', '.join(sorted(store.schema))}")
        if store.num_episodes == 0:
            raise UserError(f"{what} store {root} holds no committed episodes")
        data = read_episodes(store, obs_keys)
    windows = ChunkWindows(data, n_obs_steps, 1)
    index = np.arange(len(windows))
    obs, actions = windows.batch(index)
    lengths = np.diff(np.concatenate([[0], data.episode_ends]))
    return obs, actions[:, 0], np.repeat(np.arange(len(lengths)), lengths)


def subsample(count: int, limit: int, seed: int) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def score_candidate(candidate: Candidate, real_data: str | Path, config: Sim2RealConfig,
                    task: str | None) -> dict[str, Any]:
    """One candidate's simulated success, OOD scores of the real observations, and (with truth) its target value."""
    policy = load_policy(candidate.checkpoint)
    spec = policy.spec
    sim_obs, sim_actions, groups = observation_windows(candidate.demos, spec.obs_keys, spec.n_obs_steps,
                                                       f"simulation data of {candidate.name}:")
    real_obs, _, _ = observation_windows(real_data, spec.obs_keys, spec.n_obs_steps, "real_data")
    pick = subsample(len(next(iter(real_obs.values()))), config.max_real_steps, config.ood.seed)
    real_features = policy.features({k: v[pick] for k, v in real_obs.items()})
    sim_features = policy.features(sim_obs)
    row: dict[str, Any] = {"candidate": candidate.name, "checkpoint": str(candidate.checkpoint)}
    row["ood"] = ood_scores(sim_features, real_features, sim_actions, groups, config.ood)
    task = task or spec.task
    folder = candidate.folder if (candidate.folder / CANDIDATE_FILE).is_file() else None
    sim_variant = config.sim_variant
    if sim_variant == "training":
        sim_variant = candidate.config.get("randomization", "nominal")
    row["sim_success"] = rollout_success(folder, candidate.checkpoint, task, sim_variant, config.sim_episodes,
                                         config.eval_seed)
    if config.truth is not None:
        row["true_value"] = rollout_success(folder, candidate.checkpoint, task, config.truth,
                                            config.truth_episodes, config.eval_seed)
    return row


def estimates(rows: list[dict[str, Any]], how: str, weight: float, source: str = "knn") -> dict[str, np.ndarray]:
    """Every ranking under comparison, higher = better: sim-only, each OOD score alone (negated), and combined."""
    sim = np.array([r["sim_success"] for r in rows])
    ood = {m: np.array([r["ood"][m] for r in rows]) for m in METHODS}
    out = {"sim_only": sim, **{f"ood_{m}": -v for m, v in ood.items()}}
    if source not in (*METHODS, "consensus"):
        raise UserError(f"ood_source={source!r} is unknown; choose one of: {', '.join(METHODS)}, consensus")
    out["combined"] = combine(sim, consensus(ood, how) if source == "consensus" else ood[source], weight, how)
    return out


def score_rankings(true_values: np.ndarray, ranked: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in ranked.items():
        card = ops.score_estimator(true_values, values, ks=(1,))
        out[name] = {key: card[key] for key in METRICS}
    return out


def rank_sim2real(candidates: str | Path | Sequence[str | Path], real_data: str | Path, out_dir: str | Path,
                  config: Sim2RealConfig | None = None, task: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Rank the candidates for the domain `real_data` was recorded in; write table, JSON and plots to `out_dir`.

    Returns {"n_candidates", "candidates": [rows, best first], and with truth: "sim_only", "ood": {method: metrics},
    "combined", each {spearman, kendall, regret_at_1, mmrv}}.
    """
    config = config or Sim2RealConfig()
    resolved = resolve_candidates(candidates)
    observation_windows(real_data, (), 1, "real_data")  # a missing or empty store fails before any work
    rows = [score_candidate(c, real_data, config, task)
            for c in tqdm(resolved, desc="sim2real rank", unit="policy", file=sys.stderr, disable=not progress)]
    ranked = estimates(rows, config.how, config.weight, config.ood_source)
    for i, row in enumerate(rows):
        row["combined"] = float(ranked["combined"][i])
    order = np.argsort(-ranked["combined"], kind="stable")
    for position, i in enumerate(order):
        rows[i]["rank"] = position + 1
    result: dict[str, Any] = {"n_candidates": len(rows), "real_data": str(real_data),
                              "formula": f"{config.how}(sim_success) - {config.weight} * {config.how}(ood_"
                                         f"{config.ood_source})",
                              "candidates": [rows[i] for i in order]}
    if config.truth is not None:
        true_values = np.array([r["true_value"] for r in rows])
        scores = score_rankings(true_values, ranked)
        result.update(sim_only=scores["sim_only"], ood={m: scores[f"ood_{m}"] for m in METHODS},
                      combined=scores["combined"])
    write_outputs(Path(out_dir), result, ranked, rows)
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    truth = "true_value" in rows[0]
    head = f"{'rank':>4}  {'candidate':<22} {'sim':>6} {'mahal':>7} {'knn':>7} {'ens':>7} {'combined':>9}"
    lines = [head + (f" {'true':>6}" if truth else "")]
    for r in rows:
        line = (f"{r['rank']:>4}  {r['candidate']:<22} {r['sim_success']:>6.2f} {r['ood']['mahalanobis']:>7.2f} "
                f"{r['ood']['knn']:>7.2f} {r['ood']['ensemble']:>7.2f} {r['combined']:>9.2f}")
        lines.append(line + (f" {r['true_value']:>6.2f}" if truth else ""))
    return "\n".join(lines)


def write_outputs(out_dir: Path, result: dict[str, Any], ranked: Mapping[str, np.ndarray],
                  rows: list[dict[str, Any]]) -> None:
    """ranking.json, report.md with the table, and plots: each ranking's estimate against the true value."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "ranking.json", result)
    report = Report(out_dir, "Sim-to-real ranking")
    table = [{"rank": r["rank"], "candidate": r["candidate"], "sim_success": r["sim_success"],
              **{f"ood_{m}": r["ood"][m] for m in METHODS}, "combined": r["combined"],
              **({"true_value": r["true_value"]} if "true_value" in r else {})} for r in result["candidates"]]
    images = []
    if "true_value" in rows[0]:
        true_values = np.array([r["true_value"] for r in rows])
        fig, path = report.figure("estimate_vs_true")
        fig.set_size_inches(12, 3.2)
        for i, (name, values) in enumerate(ranked.items()):
            ax = fig.add_subplot(1, len(ranked), i + 1)
            ax.scatter(values, true_values, s=14)
            rho = ops.spearman(true_values, values)
            ax.set_title(f"{name}\nSpearman {rho:.2f}", fontsize=8)
            ax.set_xlabel("estimate (higher = better)", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_ylabel("true target success", fontsize=7)
        images.append(report.save_figure(fig, path))
    fig, path = report.figure("sim_vs_ood")
    ax = fig.add_subplot(1, 1, 1)
    points = ax.scatter([r["sim_success"] for r in rows], consensus(
        {m: np.array([r["ood"][m] for r in rows]) for m in METHODS}),
        c=[r.get("true_value", 0.0) for r in rows], cmap="viridis", s=20)
    ax.set_xlabel("simulated success")
    ax.set_ylabel("OOD consensus (rank, higher = further out)")
    if "true_value" in rows[0]:
        fig.colorbar(points, label="true target success")
    images.append(report.save_figure(fig, path))
    scores = [{"ranking": name, **values} for name, values in
              [("sim_only", result.get("sim_only")), *[(f"ood_{m}", result.get("ood", {}).get(m)) for m in METHODS],
               ("combined", result.get("combined"))] if values]
    report.add("Candidates", text=f"Formula: `{result['formula']}`.", table=table, images=images)
    if scores:
        report.add("Ranking quality against the true target values", table=scores)
    report.write()


def config_from(cfg: DictConfig | Mapping[str, Any]) -> Sim2RealConfig:
    """The ranking settings from a composed config (rank/sim2real or bench/sim2real) or a plain mapping."""
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return Sim2RealConfig(sim_variant=plain.get("sim_variant", "nominal"),
                          sim_episodes=int(plain.get("sim_episodes", 100)), truth=plain.get("truth"),
                          truth_episodes=int(plain.get("truth_episodes", 100)),
                          eval_seed=int(plain.get("eval_seed", 555)), how=str(plain.get("how", "zscore")),
                          weight=float(plain.get("weight", 0.25)),
                          ood_source=str(plain.get("ood_source", "knn")),
                          max_real_steps=int(plain.get("max_real_steps", 5000)),
                          ood=OODConfig(**plain.get("ood", {})))


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("candidates"):
        raise UserError("give the candidates: robot-rl rank method=sim2real candidates=DIR|[CKPT,...] real_data=ROOT")
    if not cfg.get("real_data"):
        raise UserError("give the real observations: robot-rl rank method=sim2real candidates=... real_data=ROOT")
    candidates = cfg.candidates
    candidates = [str(c) for c in candidates] if OmegaConf.is_list(candidates) else str(candidates)
    out_dir = Path(cfg.get("out") or Path("runs") / "rank_sim2real")
    task = cfg.task.name if cfg.get("task") is not None and not isinstance(cfg.task, str) else cfg.get("task")
    result = rank_sim2real(candidates, str(cfg.real_data), out_dir, config_from(cfg), task=task,
                           progress=bool(cfg.get("progress", True)))
    print(format_table(result["candidates"]))
    result["run_dir"] = str(out_dir)
    return result

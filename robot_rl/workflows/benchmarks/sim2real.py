"""`robot-rl bench sim2real task=PushCube target=real_a`: rank sim-trained candidates for a stand-in real robot.

1. Candidates: the sweep of `configs/bench/sim2real.yaml` (randomization settings x seeds), cached by config.
2. "Real" observations: scripted (slightly noisy) expert episodes in the target variant, cached by their config.
3. `rank_sim2real` with truth = rollouts in the target: Spearman, Kendall, regret@1, MMRV of sim-only, each OOD
   score alone, and the combination.
4. The combination ablation (which simulated success x standardization x which OOD score x form and weight) on
   this target, written to `ablation.json` in the run folder: the evidence the README's choice of formula rests on.
   The last line also gives `sim_only_by_simulator`: simulated success measured in one common simulator (nominal)
   and in each candidate's own randomization setting, each scored alone.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_rl.errors import UserError
from robot_rl.eval import ops
from robot_rl.eval.ood import METHODS, combine, consensus, standardize
from robot_rl.files import write_json
from robot_rl.workflows.collect import collect
from robot_rl.workflows.sim2real import config_from, format_table, rank_sim2real, score_rankings
from robot_rl.workflows.sweep import rollout_success, run_sweep, sweep_configs

DEFAULT_TARGET = "real_a"
ABLATION_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def parse_target(target: Any) -> tuple[str | dict[str, Any], str]:
    """`target=real_b` (a name) or `target.friction=0.5 ...` (parameters on nominal, or on `target.name`):
    the variant for `sim.make_env` and a label for folders and output."""
    if target is None or isinstance(target, str):
        name = target or DEFAULT_TARGET
        return name, name
    params = {k: v for k, v in dict(target).items() if v is not None}
    if not params:
        return DEFAULT_TARGET, DEFAULT_TARGET
    name = str(params.pop("name", "nominal"))
    if not params:
        return name, name
    label = name + "[" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + "]"
    return {"name": name, **params}, label


def real_store(cache: Path, task: str, target: str | dict[str, Any], episodes: int, noise: float, seed: int) -> Path:
    """The fixed set of "real" observations: expert episodes in the target variant, cached by their config."""
    key = hashlib.sha256(json.dumps([task, target, episodes, noise, seed], sort_keys=True).encode()).hexdigest()[:12]
    root = cache / "real" / f"{task}-{key}"
    done = root.parent / f"{root.name}.json"
    if not done.is_file():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        result = collect(task, root, episodes, variant=target, noise=noise, seed=seed, progress=False)
        write_json(done, result)
    return root


def ablation(rows: list[dict[str, Any]], sim_key: str) -> list[dict[str, Any]]:
    """Spearman and regret@1 of every combination setting on these candidates: `sim_key` (which simulated
    success) x standardization (rank, zscore) x
    which OOD score (each detector, their consensus) x form (`sum`: s(sim) - w * s(ood); `min`: the soft AND
    min(s(sim), -w * s(ood)), good only when both are) x weight."""
    true = np.array([r["true_value"] for r in rows])
    sim = np.array([r[sim_key] for r in rows])
    ood = {m: np.array([r["ood"][m] for r in rows]) for m in METHODS}
    out = [{"sim": sim_key, "how": "-", "ood": "-", "form": "sim_only", "weight": 0.0,
            "spearman": ops.spearman(true, sim), "regret_at_1": ops.regret_at_k(true, sim, 1)}]
    for how in ("rank", "zscore"):
        for source in (*METHODS, "consensus"):
            values = consensus(ood, how) if source == "consensus" else ood[source]
            settings = [("sum", w, combine(sim, values, w, how)) for w in ABLATION_WEIGHTS]
            settings.append(("min", 1.0, np.minimum(standardize(sim, how), standardize(-values, how))))
            for form, weight, est in settings:
                out.append({"sim": sim_key, "how": how, "ood": source, "form": form, "weight": weight,
                            "spearman": ops.spearman(true, est), "regret_at_1": ops.regret_at_k(true, est, 1)})
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    task = str(cfg.task.name)
    target, label = parse_target(OmegaConf.to_container(cfg.target, resolve=True)
                                 if OmegaConf.is_config(cfg.target) else cfg.target)
    cache = Path(str(cfg.cache))
    settings = OmegaConf.to_container(cfg.settings, resolve=True)
    if len(settings) * len(cfg.seeds) < 2:
        raise UserError("the sweep needs at least 2 candidates: give more settings or seeds")
    configs = sweep_configs(task, settings, list(cfg.seeds), int(cfg.demos), float(cfg.expert_noise),
                            OmegaConf.to_container(cfg.policy, resolve=True),
                            OmegaConf.to_container(cfg.train, resolve=True))
    progress = bool(cfg.progress)
    candidates = run_sweep(configs, cache, progress=progress)
    real = real_store(cache, task, target, int(cfg.real_episodes), float(cfg.real_noise), int(cfg.eval_seed) + 1)
    safe = "".join(c if c.isalnum() or c in "-_.=," else "_" for c in label)
    out_dir = Path(str(cfg.out)) if cfg.get("out") else Path("runs") / "sim2real" / safe
    config = config_from({**OmegaConf.to_container(cfg, resolve=True), "truth": target})
    result = rank_sim2real([c.folder for c in candidates], real, out_dir, config, task=task, progress=progress)
    # the ablation compares both meanings of simulated success: one common simulator (nominal) and each candidate's
    # own randomization setting (its training simulator)
    by_name = {c.name: c for c in candidates}
    for row in result["candidates"]:
        c = by_name[row["candidate"]]
        for key, variant in (("nominal", "nominal"), ("training", c.config["randomization"])):
            row[f"sim_success_{key}"] = rollout_success(c.folder, c.checkpoint, task, variant, config.sim_episodes,
                                                        config.eval_seed)
    table = ablation(result["candidates"], "sim_success_nominal") + ablation(result["candidates"],
                                                                             "sim_success_training")
    write_json(out_dir / "ablation.json", table)
    print(format_table(result["candidates"]), file=sys.stderr)
    best = max(table, key=lambda r: (np.nan_to_num(r["spearman"], nan=-2), -r["regret_at_1"]))
    print(f"ablation on this target: best {best}", file=sys.stderr)
    true = np.array([r["true_value"] for r in result["candidates"]])
    by_simulator = score_rankings(true, {key: np.array([r[f"sim_success_{key}"] for r in result["candidates"]])
                                         for key in ("nominal", "training")})
    return {"n_candidates": result["n_candidates"], "target": label, "sim_only": result["sim_only"],
            "ood": result["ood"], "combined": result["combined"], "formula": result["formula"],
            "sim_only_by_simulator": by_simulator, "run_dir": str(out_dir)}

"""Candidate policies for sim-to-real ranking: a sweep over domain-randomization settings x seeds, cached by config.

Each candidate is a cheap BC-MLP trained on scripted demos collected in the mirror under one randomization setting
(a variant mapping: `{name: nominal, latency: [0, 2]}`) with one seed (the seed draws both the demos and the
training). The sweep is the Cartesian product `settings x seeds`, what a Hydra multirun over those two keys would
launch, run in one process so the cache is shared. A candidate lives in `<cache>/<task>-<setting>-s<seed>-<hash>/`,
where the hash covers everything that made it (task, setting parameters, seed, demos, expert, policy and training
settings): a second ranking against another target, or a second run, finds it and trains nothing. `candidate.json`
(the recorded training config plus the checkpoint) is written last, so an interrupted candidate is rebuilt, never
half-used. Rollout results (simulated success, true target values) are cached beside it by variant, episodes and
seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from robot_rl.errors import UserError
from robot_rl.files import write_json
from robot_rl.policies import PolicyConfig, TrainConfig, train_policy
from robot_rl.workflows.collect import collect
from robot_rl.workflows.evaluate import evaluate_policy

CANDIDATE_FILE = "candidate.json"
ROLLOUTS_FILE = "rollouts.json"


@dataclass(frozen=True)
class CandidateConfig:
    """Everything that makes one candidate; its hash names the cache folder."""

    task: str
    setting: str  # a label for the randomization setting
    randomization: dict[str, Any]  # the variant mapping the demos were collected under
    seed: int
    demos: int = 150
    expert_noise: float = 0.0
    policy: dict[str, Any] = field(default_factory=lambda: PolicyConfig(kind="bc").to_json())
    train: dict[str, Any] = field(default_factory=lambda: {"steps": 3000})

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def folder(self, cache: Path) -> Path:
        return cache / f"{self.task}-{self.setting}-s{self.seed}-{self.key()}"


@dataclass(frozen=True)
class Candidate:
    """A trained candidate: its folder, checkpoint, demo store and the config that made it."""

    name: str
    folder: Path
    checkpoint: Path
    demos: Path
    config: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> Candidate:
        folder = Path(folder)
        path = folder / CANDIDATE_FILE
        if not path.is_file():
            raise UserError(f"{folder} is not a sim2real candidate (no {CANDIDATE_FILE}); give candidate folders, a "
                            "sweep cache folder, or policy checkpoints")
        record = json.loads(path.read_text())
        return cls(record["name"], folder, folder / record["checkpoint"], folder / record["demos"], record["config"])


def sweep_configs(task: str, settings: Mapping[str, Mapping[str, Any]], seeds: Sequence[int], demos: int,
                  expert_noise: float, policy: Mapping[str, Any], train: Mapping[str, Any]) -> list[CandidateConfig]:
    """The product settings x seeds as candidate configs (settings: label -> variant mapping)."""
    if not settings or not seeds:
        raise UserError("a sweep needs at least one randomization setting and one seed")
    PolicyConfig.from_dict(dict(policy))  # fail early on a bad policy setting
    TrainConfig.from_dict(dict(train))
    return [CandidateConfig(task=task, setting=str(name), randomization=dict(variant), seed=int(seed), demos=demos,
                            expert_noise=expert_noise, policy=dict(policy), train=dict(train))
            for name, variant in settings.items() for seed in seeds]


def ensure_candidate(config: CandidateConfig, cache: str | Path, progress: bool = False) -> Candidate:
    """The candidate from the cache, or collected and trained now (then cached)."""
    folder = config.folder(Path(cache))
    if (folder / CANDIDATE_FILE).is_file():
        return Candidate.load(folder)
    shutil.rmtree(folder, ignore_errors=True)  # a half-built candidate from an interrupted run
    demos = folder / "demos"
    collect(config.task, demos, config.demos, variant=config.randomization, noise=config.expert_noise,
            seed=1000 * config.seed + 7, progress=progress)
    train = TrainConfig.from_dict({**config.train, "seed": config.seed, "resume": False})
    result = train_policy(demos, folder / "policy", PolicyConfig.from_dict(config.policy), train, task=config.task,
                          progress=progress)
    name = f"{config.setting}-s{config.seed}"
    record = {"name": name, "checkpoint": str(result.checkpoint.relative_to(folder)), "demos": "demos",
              "config": asdict(config), "key": config.key(), "train_metrics": result.metrics}
    write_json(folder / CANDIDATE_FILE, record)
    return Candidate.load(folder)


def run_sweep(configs: Sequence[CandidateConfig], cache: str | Path, progress: bool = True) -> list[Candidate]:
    """Every candidate of the sweep, trained where the cache lacks it."""
    out = []
    for config in tqdm(configs, desc="sim2real candidates", unit="policy", file=sys.stderr, disable=not progress):
        out.append(ensure_candidate(config, cache))
    return out


def rollout_success(candidate_folder: Path | None, checkpoint: str | Path, task: str | None,
                    variant: str | Mapping[str, Any], episodes: int, seed: int) -> float:
    """Success rate of a checkpoint in a mirror variant; cached in the candidate's folder when it has one."""
    label = json.dumps({"variant": variant, "episodes": episodes, "seed": seed}, sort_keys=True, default=str)
    cache_file = candidate_folder / ROLLOUTS_FILE if candidate_folder is not None else None
    cached = json.loads(cache_file.read_text()) if cache_file is not None and cache_file.is_file() else {}
    if label not in cached:
        result = evaluate_policy(task=task, policy=str(checkpoint), episodes=episodes, variant=variant, seed=seed,
                                 progress=False)
        cached[label] = result["success_rate"]
        if cache_file is not None:
            write_json(cache_file, cached)
    return float(cached[label])

"""`robot-rl bench NAME`: run the benchmark module `robot_rl.workflows.benchmarks.<NAME>`.

Each benchmark module has `run(cfg) -> dict`; the CLI prints that dict as the last stdout line (one JSON object).
Speed figures are ratios against a baseline measured in the same process: these machines are noisy.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict:
    module = importlib.import_module(f"robot_rl.workflows.benchmarks.{cfg.name.replace('-', '_')}")
    return module.run(cfg)

"""`robot-rl data info|validate ROOT`: look inside an episode store and check its invariants."""

from __future__ import annotations

from collections import Counter

import numpy as np
from omegaconf import DictConfig

from robot_rl.data import EpisodeStore, validate
from robot_rl.errors import UserError

ACTIONS = ("info", "validate")


def info(root: str) -> dict:
    """Summary of a store: counts, keys with shapes and dtypes, and episodes by source, domain and task."""
    store = EpisodeStore.open(root, mode="r")
    meta = store.meta
    success = meta["success"]
    return {
        "root": root,
        "episodes": store.num_episodes,
        "steps": store.num_steps,
        "success_rate": float(success.mean()) if len(success) else None,
        "mean_length": float(meta["length"].mean()) if len(success) else None,
        "keys": {key: {"shape": list(spec.shape), "dtype": str(spec.dtype), "chunk": store.chunks[key]}
                 for key, spec in store.schema.items()},
        "sources": dict(Counter(meta["source"].tolist())),
        "domains": dict(Counter(meta["domain"].tolist())),
        "tasks": dict(Counter(meta["task"].tolist())),
        "interventions": _intervention_steps(store),
        "creator": store.attrs.get("creator", ""),
    }


def _intervention_steps(store: EpisodeStore) -> int | None:
    if "intervention" not in store.schema or not store.num_steps:
        return None
    return int(np.count_nonzero(store.read_steps(0, store.num_steps, ["intervention"])["intervention"]))


def format_info(summary: dict) -> str:
    """The readable table of `data info`."""
    lines = [f"store      {summary['root']}",
             f"episodes   {summary['episodes']}    steps {summary['steps']}",
             f"success    {_fmt(summary['success_rate'])}    mean length {_fmt(summary['mean_length'])}",
             f"sources    {_counts(summary['sources'])}",
             f"domains    {_counts(summary['domains'])}",
             f"tasks      {_counts(summary['tasks'])}"]
    if summary["interventions"] is not None:
        lines.append(f"takeovers  {summary['interventions']} intervened steps")
    lines += ["", f"{'key':<24}{'shape':<16}{'dtype':<10}chunk"]
    for key, spec in summary["keys"].items():
        lines.append(f"{key:<24}{str(tuple(spec['shape'])):<16}{spec['dtype']:<10}{spec['chunk']}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k or '(none)'}: {v}" for k, v in counts.items()) or "-"


def run(cfg: DictConfig) -> dict | None:
    action, root = cfg.get("action"), cfg.get("root")
    if action not in ACTIONS:
        raise UserError(f"unknown data action {action!r}; use `robot-rl data {{{'|'.join(ACTIONS)}}} ROOT`")
    if not root:
        raise UserError(f"missing ROOT; use `robot-rl data {action} ROOT`")
    as_json = bool(cfg.get("flags", {}).get("json", False))
    if action == "validate":
        result = validate(str(root))
        if not as_json:
            print(f"ok: {root} is valid ({result['episodes']} episodes, {result['steps']} steps)")
            return None
        return result
    summary = info(str(root))
    if as_json:
        return summary
    print(format_info(summary))
    return None

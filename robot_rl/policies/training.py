"""Training a base policy from an episode store: episode-level split, EMA, validation, checkpoints, resume.

The loop is deliberately plain: batches are gathered with NumPy from data held in memory (demo stores are small),
AdamW with warmup and cosine decay, an EMA copy of the weights that is what gets validated, evaluated and saved
(the usual diffusion-policy practice: EMA weights sample markedly better than the raw ones). Every `ckpt_every` steps
the EMA policy and the full training state are written atomically, so a killed run resumes where it stopped with the
same batches it would have drawn. Success evaluation in a sim mirror is a callback (`evaluate(path) -> metrics`), so
this package never imports `sim`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robot_rl.data import EpisodeStore
from robot_rl.errors import UserError
from robot_rl.files import write_json
from robot_rl.policies.checkpoint import (
    read_train_state,
    restore_train_state,
    save_policy,
    save_train_state,
)
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.dataset import ChunkWindows, EpisodeData, read_episodes, split_episodes, store_task
from robot_rl.policies.policy import PolicyModel
from robot_rl.policies.spec import PolicySpec

POLICY_FILE = "policy.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.json"

Evaluator = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimization and bookkeeping settings of `robot-rl train-base` (the `train:` block of its config)."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995  # upper bound; the decay ramps up from 0 so early EMA weights are not stuck at init
    val_fraction: float = 0.1
    val_every: int = 250
    val_samples: int = 256
    ckpt_every: int = 500
    eval_every: int = 0  # 0: no success evaluation during training
    seed: int = 0
    success_only: bool = False  # train on successful episodes only
    action_key: str = "action"
    rate_hz: float = 20.0  # control rate the policy is trained for (the task's control_hz when task= is given)
    threads: int = 1  # torch threads while training; 1 is fastest on a busy small CPU, 0 keeps torch's default
    resume: bool = True  # continue from out/train_state.safetensors when it exists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class TrainResult:
    """What a training run produced: the EMA policy checkpoint, the best one by success (when evaluated), metrics."""

    checkpoint: Path
    best_checkpoint: Path | None
    steps: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to zero at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float) -> None:
    decay = min(max_decay, (1 + step) / (10 + step))
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.lerp_(p, 1 - decay)
    for ema_b, b in zip(ema.buffers(), model.buffers()):
        ema_b.copy_(b)


def to_tensors(obs: dict[str, np.ndarray], actions: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in obs.items()}, torch.from_numpy(actions)


class Validator:
    """Loss and sampled-chunk error on a fixed set of validation windows with fixed noise: comparable across steps."""

    def __init__(self, windows: ChunkWindows | None, samples: int, seed: int) -> None:
        self.windows = windows
        self.seed = seed
        if windows is not None:
            rng = np.random.default_rng(seed)
            self.index = np.sort(rng.choice(len(windows), size=min(samples, len(windows)), replace=False))

    @torch.no_grad()
    def __call__(self, model: PolicyModel) -> dict[str, float]:
        if self.windows is None:
            return {}
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        losses, errors, counts = [], [], []
        for chunk in np.array_split(self.index, max(1, math.ceil(len(self.index) / 256))):
            obs, actions = to_tensors(*self.windows.batch(chunk))
            losses.append(model.loss(obs, actions, generator).item())
            errors.append(((model.sample(obs, generator) - actions) ** 2).mean().item())
            counts.append(len(chunk))
        model.train(was_training)
        return {"val_loss": float(np.average(losses, weights=counts)),
                "val_action_mse": float(np.average(errors, weights=counts))}


def build_spec(data: EpisodeData, policy: PolicyConfig, task: str, rate_hz: float) -> PolicySpec:
    return PolicySpec(obs_keys=tuple(policy.obs_keys), action_dim=int(data.actions.shape[1]), horizon=policy.horizon,
                      n_obs_steps=policy.n_obs_steps, rate_hz=float(rate_hz), task=task,
                      obs_shapes={k: tuple(v.shape[1:]) for k, v in data.obs.items()},
                      n_action_steps=policy.n_action_steps, kind=policy.kind)


def train_policy(data_root: str | Path, out_dir: str | Path, policy: PolicyConfig, train: TrainConfig,
                 task: str | None = None, evaluate: Evaluator | None = None, progress: bool = True) -> TrainResult:
    """Train a base policy on the store at `data_root`; checkpoints, training state and metrics go to `out_dir`."""
    out_dir = Path(out_dir)
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    with EpisodeStore.open(data_root, mode="r") as store:
        task = store_task(store, task)
        data = read_episodes(store, tuple(policy.obs_keys), train.action_key, train.success_only)
    if len(data.episode_ids) < 2 and train.val_fraction > 0:
        raise UserError(f"store {data_root} has {len(data.episode_ids)} usable episode(s); validation by episode "
                        "needs at least 2 (or set train.val_fraction=0)")
    train_ids, val_ids = split_episodes(len(data.episode_ids), train.val_fraction, train.seed)
    train_data = data.subset(train_ids)
    windows = ChunkWindows(train_data, policy.n_obs_steps, policy.horizon)
    val_windows = ChunkWindows(data.subset(val_ids), policy.n_obs_steps, policy.horizon) if len(val_ids) else None
    validate = Validator(val_windows, train.val_samples, train.seed)

    spec = build_spec(data, policy, task, train.rate_hz)
    torch.manual_seed(train.seed)
    model = PolicyModel(spec, policy)
    model.normalizer.fit(train_data.obs, train_data.actions)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    rng = np.random.default_rng(train.seed + 1)
    run_header = {"spec": spec.to_json(), "config": policy.to_json(), "store": str(data_root),
                  "episodes": data.episode_ids.tolist(), "val_episodes": data.episode_ids[val_ids].tolist()}

    step, history, best = 0, [], {"success_rate": -1.0}
    state_path = out_dir / STATE_FILE
    if train.resume and state_path.exists():
        tensors, header = read_train_state(state_path)
        mismatched = [k for k in run_header if header.get(k) != run_header[k] and k != "store"]
        if mismatched:
            raise UserError(f"{state_path} was made with a different {', '.join(mismatched)}; "
                            "use the same settings and store, or train.resume=false to start over")
        restore_train_state(tensors, header, model, ema, optimizer, f"training state {state_path}")
        step, history, best = header["step"], header["history"], header["best"]
        rng.bit_generator.state = header["numpy_rng"]
    else:
        history.append({"step": 0, **validate(ema)})

    def checkpoint(final: bool = False) -> None:
        """Policy and training state first (a crash in the evaluation below loses nothing), then evaluation."""
        info = {"step": step, "store": str(data_root), "seed": train.seed, **(history[-1] if history else {})}
        save_policy(out_dir / POLICY_FILE, ema, info)
        save_state()
        if evaluate is not None and (final or (train.eval_every and step % train.eval_every == 0)):
            result = evaluate(out_dir / POLICY_FILE)
            history.append({"step": step, **result})
            if result.get("success_rate", -1.0) > best["success_rate"]:
                best.update(step=step, success_rate=result["success_rate"])
                save_policy(out_dir / BEST_FILE, ema, {**info, **result})
            save_state()

    def save_state() -> None:
        save_train_state(state_path, model, ema, optimizer,
                         {**run_header, "step": step, "history": history, "best": best, "train": asdict(train),
                          "numpy_rng": rng.bit_generator.state})
        write_json(out_dir / METRICS_FILE, history)

    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    bar = tqdm(total=train.steps, initial=step, desc=f"train-base {spec.kind}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    while step < train.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, train)
        obs, actions = to_tensors(*windows.batch(rng.integers(0, len(windows), train.batch_size)))
        loss = model.loss(obs, actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        update_ema(ema, model, step, train.ema_decay)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % train.val_every == 0 or step == train.steps:
            history.append({"step": step, "train_loss": float(np.mean(losses[-train.val_every:])), **validate(ema)})
            bar.set_postfix({k: f"{v:.4f}" for k, v in history[-1].items() if k != "step"})
        elif step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        evaluate_now = evaluate is not None and train.eval_every and step % train.eval_every == 0
        if step < train.steps and (step % train.ckpt_every == 0 or evaluate_now):
            checkpoint()
    bar.close()
    checkpoint(final=True)
    return TrainResult(
        checkpoint=out_dir / POLICY_FILE,
        best_checkpoint=out_dir / BEST_FILE if best["success_rate"] >= 0 else None,
        steps=step,
        metrics=summarize(history, best, time.perf_counter() - started),
        history=history,
    )


def summarize(history: list[dict[str, Any]], best: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The last value of each metric, the initial validation loss, and the best success rate when evaluated."""
    metrics: dict[str, Any] = {}
    for entry in history:
        metrics.update({k: v for k, v in entry.items() if k != "step"})
    val = [e["val_loss"] for e in history if "val_loss" in e]
    if val:
        metrics["val_loss_initial"] = val[0]
    if best["success_rate"] >= 0:
        metrics["best_success_rate"], metrics["best_step"] = best["success_rate"], best["step"]
    metrics["train_seconds"] = round(seconds, 1)
    return metrics

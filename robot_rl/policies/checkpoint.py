"""Checkpoint I/O: one safetensors file per checkpoint, its JSON config in the header, no pickle anywhere.

A policy checkpoint holds the weights (normalization statistics included, as buffers) and, in the safetensors header
metadata, the JSON description: format tag, `PolicySpec`, `PolicyConfig`, training info, and a sha256 over the tensor
bytes. Loading parses JSON and raw tensors only, so it runs no code from the file, and a truncated or corrupted file
fails with a one-line UserError instead of a half-loaded policy. Every write goes to a temporary file in the same
folder, is fsynced, then renamed over the target: a kill at any instant leaves either the old file or the new one.
The training state (for resume) uses the same container: model, EMA and optimizer tensors plus JSON counters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from robot_rl.errors import UserError
from robot_rl.files import write_atomic
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.policy import ChunkPolicy, PolicyModel
from robot_rl.policies.spec import PolicySpec

POLICY_FORMAT = "robot_rl.policy"
TRAIN_STATE_FORMAT = "robot_rl.train_state"
FORMAT_VERSION = "1"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order: detects bit rot the safetensors header cannot."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], fmt: str, header: dict[str, Any]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": fmt, "version": FORMAT_VERSION, "sha256": tensors_digest(tensors),
                "config": json.dumps(header)}
    write_atomic(path, safetensors_bytes(tensors, metadata=metadata))


def read_safetensors(path: str | Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON header of a file written by `write_safetensors`; any damage is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises several types for truncated or garbled files
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from exc
    if metadata.get("format") != fmt:
        raise UserError(f"{path} is not a {fmt} checkpoint (format {metadata.get('format')!r})")
    if metadata.get("version") != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint version {metadata.get('version')!r}; this code reads {FORMAT_VERSION}")
    if metadata.get("sha256") != tensors_digest(tensors):
        raise UserError(f"checkpoint {path} is corrupt: its weights do not match the stored sha256")
    try:
        header = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint {path} is corrupt: unreadable JSON config") from exc
    return tensors, header


def save_policy(path: str | Path, model: PolicyModel, info: dict[str, Any] | None = None) -> Path:
    """Write a deployable policy checkpoint (spec, config, weights, normalization statistics)."""
    header = {"spec": model.spec.to_json(), "config": model.config.to_json(), "info": info or {}}
    write_safetensors(path, model.state_dict(), POLICY_FORMAT, header)
    return Path(path)


def read_policy_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON (spec, config, info) after verifying the file."""
    return read_safetensors(path, POLICY_FORMAT)[1]


def load_model(path: str | Path) -> PolicyModel:
    tensors, header = read_safetensors(path, POLICY_FORMAT)
    try:
        spec = PolicySpec.from_json(header["spec"])
        config = PolicyConfig.from_dict(header["config"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"checkpoint {path} has an incomplete config ({exc})") from exc
    model = PolicyModel(spec, config)
    load_weights(model, tensors, f"checkpoint {path}")
    return model


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor of `module` from `tensors`; missing, extra or reshaped tensors are a one-line UserError."""
    expected = module.state_dict()
    problems = [f"missing {sorted(set(expected) - set(tensors))[:3]}" if set(expected) - set(tensors) else "",
                f"unexpected {sorted(set(tensors) - set(expected))[:3]}" if set(tensors) - set(expected) else ""]
    problems += [f"{k} has shape {tuple(tensors[k].shape)}, the network {tuple(v.shape)}"
                 for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape][:2]
    problems = [p for p in problems if p]
    if problems:
        raise UserError(f"{source} does not fit the network its config describes: {'; '.join(problems)}")
    module.load_state_dict(tensors, strict=True)


def load_policy(path: str | Path, task: str | None = None, action_dim: int | None = None,
                obs_shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0,
                ddim_steps: int | None = None) -> ChunkPolicy:
    """Load a base policy; with `task`, `action_dim` or `obs_shapes` given, a checkpoint made for something else is
    a UserError naming the mismatch. `ddim_steps` overrides the sampling steps of a diffusion policy."""
    model = load_model(path)
    model.spec.check_matches(task=task, action_dim=action_dim, obs_shapes=obs_shapes, source=f"checkpoint {path}")
    policy = ChunkPolicy(model, seed=seed)
    policy.checkpoint = str(path)
    if ddim_steps is not None:
        policy.ddim_steps = ddim_steps
    return policy


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors and JSON (no pickle): per-parameter tensors by index."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{name}"] = value
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(path: str | Path, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer,
                     header: dict[str, Any]) -> None:
    """Everything needed to resume training exactly: weights, EMA weights, optimizer moments, counters, RNG."""
    optim_tensors, optim_meta = flatten_optimizer(optimizer.state_dict())
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema/{k}": v for k, v in ema.state_dict().items()}
    tensors |= optim_tensors
    tensors["rng/torch"] = torch.get_rng_state()
    write_safetensors(path, tensors, TRAIN_STATE_FORMAT, {**header, "optimizer": optim_meta})


def read_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON header of a training state, verified, so the header can be checked before restoring."""
    return read_safetensors(path, TRAIN_STATE_FORMAT)


def restore_train_state(tensors: dict[str, torch.Tensor], header: dict[str, Any], model: nn.Module, ema: nn.Module,
                        optimizer: torch.optim.Optimizer, source: str) -> None:
    """Put what `save_train_state` wrote back into freshly built objects (weights, EMA, optimizer, torch RNG)."""
    group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    load_weights(model, group("model/"), source)
    load_weights(ema, group("ema/"), source)
    optimizer.load_state_dict(unflatten_optimizer(group("optim/"), header["optimizer"]))
    torch.set_rng_state(tensors["rng/torch"])

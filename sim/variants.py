"""Domain variants: named sets of physics and sensing parameters that shift a mirror away from its nominal model.

`configs/variant/<name>.yaml` is the single source of truth for named variants. A parameter is a number (fixed) or a
`[low, high]` pair (sampled uniformly at every reset). Parameters not given keep their `nominal` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import yaml

from sim.errors import SimError

VARIANT_DIR = Path(__file__).resolve().parents[1] / "configs" / "variant"
PARAMETERS = ("friction", "mass", "damping", "gain", "latency", "obs_noise", "init_spread")

Value = float | tuple[float, float]


@dataclass(frozen=True)
class Variant:
    """One domain variant. Scales multiply the nominal model; latency is in control steps; obs_noise is a std."""

    name: str = "nominal"
    friction: Value = 1.0
    mass: Value = 1.0
    damping: Value = 1.0
    gain: Value = 1.0
    latency: Value = 0
    obs_noise: Value = 0.0
    init_spread: Value = 1.0

    def __post_init__(self) -> None:
        for key in PARAMETERS:
            value = getattr(self, key)
            low, high = value if isinstance(value, tuple) else (value, value)
            positive = key in ("friction", "mass", "damping", "gain")
            if not (np.isfinite(low) and np.isfinite(high) and low <= high and (low > 0 if positive else low >= 0)):
                bound = "> 0" if positive else ">= 0"
                raise SimError(f"variant {self.name!r}: {key}={value} is invalid; give a number {bound} "
                               f"or a [low, high] range with low <= high")

    @property
    def randomized(self) -> bool:
        return any(isinstance(getattr(self, key), tuple) for key in PARAMETERS)

    def params(self) -> dict[str, Any]:
        """The seven parameters as plain numbers or [low, high] lists (for configs and store metadata)."""
        return {key: list(v) if isinstance(v := getattr(self, key), tuple) else v for key in PARAMETERS}

    def sample(self, rng: np.random.Generator) -> Variant:
        """A fixed variant: every range drawn uniformly (latency as an integer), fixed values kept."""
        drawn = {}
        for key in PARAMETERS:
            value = getattr(self, key)
            if isinstance(value, tuple):
                value = int(rng.integers(value[0], value[1] + 1)) if key == "latency" else float(rng.uniform(*value))
            drawn[key] = value
        return dataclasses.replace(self, **drawn)


def variant_names() -> list[str]:
    return sorted(p.stem for p in VARIANT_DIR.glob("*.yaml"))


def _value(key: str, value: Any) -> Value:
    """A parameter from YAML or the command line: a number or a [low, high] pair."""
    try:
        numbers = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) not in (1, 2) or (key == "latency" and any(n != int(n) for n in numbers)):
        kind = "a whole number of control steps" if key == "latency" else "a number"
        raise SimError(f"variant parameter {key}={value!r} is not {kind} or a [low, high] pair of them; "
                       f"write e.g. {key}={1 if key == 'latency' else 0.8} or "
                       f"{key}={'[0,2]' if key == 'latency' else '[0.6,1.4]'}")
    numbers = tuple(int(n) for n in numbers) if key == "latency" else numbers
    return numbers if len(numbers) == 2 else numbers[0]


def load_variant(name: str, **overrides: Any) -> Variant:
    """The named variant from configs/variant/<name>.yaml, with `overrides` (parameter -> value) applied.

    An overridden variant is labelled `name[key=value,...]` so that stored episodes say exactly what ran.
    """
    path = VARIANT_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SimError(f"unknown variant {name!r}; choose one of: {', '.join(variant_names())}")
    params = yaml.safe_load(path.read_text()) or {}
    params.pop("name", None)
    unknown = sorted(set(params) - set(PARAMETERS)) or sorted(set(overrides) - set(PARAMETERS))
    if unknown:
        raise SimError(f"unknown variant parameter(s) {', '.join(unknown)}; "
                       f"the parameters are: {', '.join(PARAMETERS)}")
    values = {key: _value(key, value) for key, value in params.items()}
    changed = {key: _value(key, value) for key, value in overrides.items() if _value(key, value) != values.get(key)}
    label = name
    if changed:
        label += "[" + ",".join(f"{key}={list(v) if isinstance(v, tuple) else v}" for key, v in changed.items()) + "]"
    return Variant(name=label, **{**values, **changed})


def resolve_variant(variant: str | Mapping[str, Any] | Variant) -> Variant:
    """Accept a Variant, a name, or a mapping with an optional `name` plus parameters (e.g. Hydra's cfg.variant)."""
    if isinstance(variant, Variant):
        return variant
    if isinstance(variant, str):
        return load_variant(variant)
    params = dict(variant)
    return load_variant(str(params.pop("name", "nominal")), **params)


class PhysicsScaler:
    """Applies a variant's scales to a model, always starting from the nominal values it saw first."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.friction = model.geom_friction.copy()
        self.mass = model.body_mass.copy()
        self.inertia = model.body_inertia.copy()
        self.damping = model.dof_damping.copy()
        self.kp = model.actuator_gainprm[:, 0].copy()
        self.bias_kp = model.actuator_biasprm[:, 1].copy()

    def apply(self, model: mujoco.MjModel, data: mujoco.MjData, variant: Variant) -> None:
        """Scale friction (all three coefficients), masses with inertias, joint damping, and servo gains (kp).

        Masses feed constants that MuJoCo derives at compile time (constraint scaling), so those are recomputed.
        """
        model.geom_friction[:] = self.friction * variant.friction
        if not np.allclose(model.body_mass, self.mass * variant.mass):
            model.body_mass[:] = self.mass * variant.mass
            model.body_inertia[:] = self.inertia * variant.mass
            mujoco.mj_setConst(model, data)
        model.dof_damping[:] = self.damping * variant.damping
        model.actuator_gainprm[:, 0] = self.kp * variant.gain
        model.actuator_biasprm[:, 1] = self.bias_kp * variant.gain

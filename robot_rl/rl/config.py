"""One dataclass for every learner recipe: `configs/residual/<recipe>.yaml` maps onto `AgentConfig`.

A recipe (ours, ResFiT's TD3, SAC from scratch) is only a set of values here, so the recipes run on the same code and
differ only where their config says so. Units: actions are normalized to [-1, 1]; residual noise and entropy targets
are in *normalized residual* units (fractions of `scale`), so they keep their meaning when `scale` changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_rl.errors import UserError

RECIPE_DIR = Path(__file__).resolve().parents[2] / "configs" / "residual"


@dataclass
class NetworkConfig:
    """Trunk size. With `AgentConfig.bounded` a block is SimbaV2's (two projected linear maps, LERP residual on the
    unit sphere); without it a block is one Dense + LayerNorm + ReLU layer (ResFiT's MLP)."""

    hidden_dim: int = 256
    num_blocks: int = 1
    expansion: int = 4  # width multiplier inside a bounded block (SimbaV2 uses 4)
    layer_norm: bool = True  # unbounded trunk only: LayerNorm after each Dense (ResFiT: crucial); False = bare MLP


@dataclass
class CriticConfig(NetworkConfig):
    num_critics: int = 2  # vmapped ensemble heads
    num_min: int = 2  # target = min over this many randomly chosen heads (REDQ; = num_critics for clipped double Q)
    actor_agg: str = "min"  # how the actor aggregates the heads: "min" (SAC) or "mean" (REDQ)
    categorical: bool = False  # distributional critic: cross-entropy on a fixed support
    num_bins: int = 101
    v_min: float = -5.0
    v_max: float = 5.0


@dataclass
class EncoderConfig:
    """Camera images (DrQ): one conv encoder per camera in `image_keys` (e.g. ["image_front"]), trained by the critic,
    with random-shift augmentation of up to `shift` pixels on training batches. Empty `image_keys`: state only."""

    image_keys: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=lambda: [32, 32])  # 3x3 convs, the first with stride 2
    feature_dim: int = 50  # features per camera (after LayerNorm + tanh)
    shift: int = 4  # pad + random crop, pixels (DrQ: 4 at 84x84)


@dataclass
class AgentConfig:
    name: str = "ours"
    algo: str = "sac"  # "sac" (stochastic actor, learned temperature) or "td3" (deterministic actor, noise)
    # residual composition: executed action = clip(base + scale * tanh(u), -1, 1)
    enabled: bool = True  # False: plain RL from scratch on the same code (no base policy, scale 1)
    scale: float = 0.1
    progressive_steps: int = 0  # Policy Decorator: apply the residual with prob min(step / this, 1); 0 = always
    # exploration noise correlated across an episode's steps: the unit Gaussian behind each sampled residual follows
    # eps_t = rho * eps_{t-1} + sqrt(1 - rho^2) * N(0, 1), so each step's action distribution is the policy's own and
    # only its course in time changes (off-policy learning reads the executed actions). 0: independent steps (SAC as
    # published); ~0.9: deviations last ~10 steps, so a small per-step noise can carry the arm measurably off the
    # base's path
    noise_correlation: float = 0.0
    # networks
    bounded: bool = True  # ablation switch: False = plain MLP + LayerNorm, no weight projection
    actor: NetworkConfig = field(default_factory=NetworkConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # camera images; none by default
    # targets
    gamma: float = 0.99
    # SAC's soft target r + gamma * (Q' - alpha log pi'): False drops the entropy term from the critic's target (as
    # HIL-SERL does); the actor's loss keeps it. With a tight policy, log pi is large (+29 at std 0.03 over 14
    # dimensions), so once the temperature rises (e.g. against residual_l2) the entropy term, not the reward, sets Q
    backup_entropy: bool = True
    n_step: int = 3  # read by the batch sampler: batches carry n-step rewards and gamma^m * not-terminal discounts
    tau: float = 0.005
    reward_scaling: bool = False  # divide rewards by the return-based scale (SimbaV2) so values fit the support
    g_max: float = 5.0
    # optimization
    batch_size: int = 256
    utd: int = 1  # critic updates per update call, all in one jitted call (with the actor's update)
    obs_stats: dict | None = None  # {"mean": [...], "std": [...]}: the state is standardized before the networks
    update_ratio: float = 1.0  # update calls per env step: critic updates per env step = utd * update_ratio
    actor_every: int = 1  # actor (and temperature) update every k update calls
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    max_grad_norm: float = 1.0  # global-norm clip, a hard bound on every step
    # SAC temperature; target entropy = 0.5 * |A| * log(2 pi e std^2) in normalized residual units
    init_temperature: float = 0.1
    learn_temperature: bool = True
    target_entropy_std: float = 0.3  # < 0.48: a tanh-squashed residual in [-1, 1] cannot be more spread than uniform
    init_std: float = 0.3  # initial policy std in normalized residual units
    # TD3 noise, normalized residual units
    explore_std: float = 0.5
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    # what the critic reads besides the observation: "action" (the executed action) or "base_residual" (the base
    # action and the residual in units of `scale`, clipped to +-residual_clip; see ResidualAgent.critic_action)
    critic_input: str = "action"
    residual_clip: float = 3.0
    # data and schedule
    demo_fraction: float = 0.5  # symmetric sampling: share of each batch from demos + interventions
    # actor loss + bc_weight * mean over demo-side rows (demos and intervened steps) of |tanh(mean) - target|^2, the
    # target being the correction the demonstrator made, (action - base) / scale clipped to [-1, 1]: where a person
    # (or the scripted expert) acted, the residual is pulled their way, as far as `scale` allows
    bc_weight: float = 0.0
    # actor loss + residual_l2 * mean over all rows of |residual / scale|^2 (the residual the actor samples): holds the
    # residual's mean and its spread near the base unless the critic's gradient is consistently stronger. SAC's
    # temperature only bounds the entropy from below; where the critic has seen no larger residuals (a base that
    # succeeds only in a narrow band of actions, BimanualHandover) its extrapolation can widen the policy until the
    # exploration alone breaks the task
    residual_l2: float = 0.0
    # RLIF: subtract this from the reward of the last policy step before each takeover (intervention start), so the
    # critic learns that what made a person take over is bad even when the person then succeeds; 0 = task reward only
    takeover_penalty: float = 0.0
    warmup_steps: int = 1000  # env steps executing base + uniform noise before any update
    warmup_noise: float = 0.2  # half-width of that noise, action units
    critic_warmup_updates: int = 0  # critic-only gradient steps run once the env warm-up ends

    def __post_init__(self) -> None:
        if isinstance(self.actor, dict):
            self.actor = _build(NetworkConfig, self.actor, "actor")
        if isinstance(self.critic, dict):
            self.critic = _build(CriticConfig, self.critic, "critic")
        if isinstance(self.encoder, dict):
            self.encoder = _build(EncoderConfig, self.encoder, "encoder")
        self.encoder.image_keys = [str(k) for k in self.encoder.image_keys]
        self.encoder.channels = [int(c) for c in self.encoder.channels]
        self.validate()

    @property
    def residual_scale(self) -> float:
        """From scratch the actor spans the whole action box."""
        return self.scale if self.enabled else 1.0

    def target_entropy(self, action_dim: int) -> float:
        return 0.5 * action_dim * math.log(2 * math.pi * math.e * self.target_entropy_std**2)

    def validate(self) -> None:
        checks = [
            (self.algo in ("sac", "td3"), f"algo={self.algo!r}; use sac or td3"),
            (0.0 <= self.noise_correlation < 1.0,
             f"noise_correlation={self.noise_correlation}; use an AR(1) coefficient in [0, 1)"),
            (self.critic_input in ("action", "base_residual"),
             f"critic_input={self.critic_input!r}; use action or base_residual"),
            (self.residual_clip > 0, f"residual_clip={self.residual_clip}; use a positive clip"),
            (self.bc_weight >= 0, f"bc_weight={self.bc_weight}; use a weight >= 0"),
            (self.residual_l2 >= 0, f"residual_l2={self.residual_l2}; use a weight >= 0"),
            (self.takeover_penalty >= 0, f"takeover_penalty={self.takeover_penalty}; use a penalty >= 0"),
            (0 < self.scale <= 2, f"scale={self.scale}; use a residual scale in (0, 2]"),
            (0 < self.gamma < 1, f"gamma={self.gamma}; use a discount in (0, 1)"),
            (self.n_step >= 1, f"n_step={self.n_step}; use n_step >= 1"),
            (self.utd >= 1 and self.actor_every >= 1, "utd and actor_every must be >= 1"),
            (self.obs_stats is None or len(self.obs_stats.get("mean", ())) == len(self.obs_stats.get("std", ()))
             and min(self.obs_stats["std"], default=1.0) > 0, "obs_stats needs mean and std lists, std > 0"),
            (self.update_ratio > 0, f"update_ratio={self.update_ratio}; use update calls per env step > 0"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}; use a positive batch size"),
            (1 <= self.critic.num_min <= self.critic.num_critics,
             f"critic.num_min={self.critic.num_min}; use 1..critic.num_critics ({self.critic.num_critics})"),
            (self.critic.actor_agg in ("min", "mean"), f"critic.actor_agg={self.critic.actor_agg!r}; use min or mean"),
            (self.critic.v_min < self.critic.v_max and self.critic.num_bins >= 2, "critic support needs v_min < v_max"),
            (0.0 <= self.demo_fraction <= 1.0, f"demo_fraction={self.demo_fraction}; use a fraction in [0, 1]"),
            (self.init_std > 0 and self.target_entropy_std > 0, "init_std and target_entropy_std must be > 0"),
            (len(set(self.encoder.image_keys)) == len(self.encoder.image_keys)
             and "state" not in self.encoder.image_keys,
             f"encoder.image_keys={self.encoder.image_keys}; name each camera key once (e.g. image_front)"),
            (len(self.encoder.channels) >= 1 and min(self.encoder.channels) >= 1 and self.encoder.feature_dim >= 1,
             "encoder.channels needs at least one positive width and encoder.feature_dim must be >= 1"),
            (self.encoder.shift >= 0, f"encoder.shift={self.encoder.shift}; use a pixel shift >= 0"),
            (self.target_entropy(1) < math.log(2.0), f"target_entropy_std={self.target_entropy_std} asks for more "
             "entropy than a uniform residual has; use a value below 0.48"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"bad residual recipe {self.name!r}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AgentConfig:
        """Build from a plain dict (a Hydra group turned into a container); unknown keys are a user error."""
        return _build(cls, dict(values), "residual")


def _build(cls: type, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown {where} key(s) {unknown}; known keys: {sorted(names)}")
    return cls(**values)


def load_recipe(name: str, **overrides: Any) -> AgentConfig:
    """Read `configs/residual/<name>.yaml` (without Hydra, for tests and plain Python callers). An override is a
    top-level key, a dotted one (`critic.hidden_dim`) or a group mapping merged into the recipe's group key by key."""
    from omegaconf import OmegaConf

    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise UserError(f"unknown residual recipe {name!r}; choose one of: {choices}")
    recipe = OmegaConf.load(path)
    for key, value in overrides.items():  # Hydra's `+overrides.critic.hidden_dim=256` arrives as a nested mapping
        OmegaConf.update(recipe, key, value, merge=True)
    values = OmegaConf.to_container(recipe, resolve=True)
    return AgentConfig.from_dict(values)

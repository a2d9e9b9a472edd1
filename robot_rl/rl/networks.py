"""Actor and critic ensemble. `bounded` picks the trunk: the SimbaV2-style hyperspherical one or the plain MLP with
LayerNorm (the ablation and ResFiT's network); everything else is shared, so the switch isolates the effect of the
bounded norms.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from robot_rl.rl.layers import HyperTrunk, MLPTrunk

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def make_trunk(bounded: bool, hidden_dim: int, num_blocks: int, expansion: int, layer_norm: bool = True) -> nn.Module:
    if bounded:
        return HyperTrunk(hidden_dim, num_blocks, expansion)
    return MLPTrunk(hidden_dim, num_blocks, layer_norm)


def log_std_bias(init_std: float) -> float:
    """Bias of the log-std head so that the squashed map below starts at `init_std`."""
    frac = (math.log(init_std) - LOG_STD_MIN) / (LOG_STD_MAX - LOG_STD_MIN)
    return math.atanh(min(max(2.0 * frac - 1.0, -0.999), 0.999))


class Actor(nn.Module):
    """Gaussian pre-tanh policy head. Both heads have zero kernels and the mean head a zero bias, so before any update
    the deterministic residual is exactly 0: training starts at the base policy."""

    action_dim: int
    hidden_dim: int
    num_blocks: int
    expansion: int
    bounded: bool
    init_std: float = 0.5
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = make_trunk(self.bounded, self.hidden_dim, self.num_blocks, self.expansion, self.layer_norm)(x)
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.zeros, name="mean")(h)
        raw = nn.Dense(self.action_dim, kernel_init=nn.initializers.zeros,
                       bias_init=nn.initializers.constant(log_std_bias(self.init_std)), name="log_std")(h)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


class Critic(nn.Module):
    """Q(s, a): one scalar, or `num_bins` logits over a fixed support when the critic is categorical."""

    hidden_dim: int
    num_blocks: int
    expansion: int
    bounded: bool
    num_outputs: int = 1
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        h = make_trunk(self.bounded, self.hidden_dim, self.num_blocks, self.expansion, self.layer_norm)(
            jnp.concatenate([obs, action], axis=-1))
        out = nn.Dense(self.num_outputs, name="head")(h)
        return out[..., 0] if self.num_outputs == 1 else out


class CriticEnsemble(nn.Module):
    """`num_critics` independent critics evaluated in one vectorized call (vmap over stacked parameters)."""

    num_critics: int
    hidden_dim: int
    num_blocks: int
    expansion: int
    bounded: bool
    num_outputs: int = 1
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                           out_axes=0, axis_size=self.num_critics)
        return ensemble(self.hidden_dim, self.num_blocks, self.expansion, self.bounded, self.num_outputs,
                        self.layer_norm, name="critics")(obs, action)

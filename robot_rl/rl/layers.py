"""Bounded-norm building blocks (SimbaV2 / FlashSAC): every hidden feature lives on the unit sphere and every hidden
weight row has unit norm, so neither activations nor effective learning rates can drift as training goes on.

Projected parameters are recognized by their leaf name: `hyper_kernel` (one unit-norm row per output unit) and
`rms_scale` (norm-layer gain kept at norm sqrt(d)). `project_params` is called after every optimizer step.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-6


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), EPS))


def unit_columns_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Random directions on the unit sphere, one per output unit (a kernel column); in the widths used here random
    unit vectors are nearly orthogonal, and a Gaussian draw compiles far faster than a QR-based orthogonal init."""
    return l2_normalize(jax.random.normal(key, shape, dtype), axis=-2)


class HyperDense(nn.Module):
    """Linear map without bias; `project_params` keeps each output unit's weight vector at unit norm."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("hyper_kernel", unit_columns_init, (x.shape[-1], self.features))
        return x @ kernel


class Scaler(nn.Module):
    """Learnable per-feature gain `init * p / scale` with p stored at magnitude `scale`, so that Adam's step size is
    commensurate with the unit-norm weights around it (SimbaV2's scaler parametrization)."""

    init: float = 1.0
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.param("scaler", nn.initializers.constant(self.scale), (x.shape[-1],))
        return x * p * (self.init / self.scale)


class RMSNorm(nn.Module):
    """RMS normalization whose gain is projected to norm sqrt(d): it may re-weight features, not grow them."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gain = self.param("rms_scale", nn.initializers.ones, (x.shape[-1],))
        rms = jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS)
        return x / rms * gain


class HyperEmbedding(nn.Module):
    """Input -> unit sphere. A constant `shift` coordinate is appended before normalizing so the input's magnitude
    survives the projection (SimbaV2)."""

    features: int
    shift: float = 3.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shift = jnp.full(x.shape[:-1] + (1,), self.shift, x.dtype)
        x = l2_normalize(jnp.concatenate([x, shift], axis=-1))
        h = Scaler(init=1.0, scale=1.0 / math.sqrt(self.features))(HyperDense(self.features)(x))
        return l2_normalize(h)


class HyperBlock(nn.Module):
    """Pre-normalized residual block on the sphere: h <- l2n(h + alpha * (l2n(MLP(h)) - h)) (LERP residual)."""

    features: int
    expansion: int = 4
    alpha_init: float = 0.5

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        width = self.features * self.expansion
        u = HyperDense(width)(h)
        u = nn.relu(Scaler(init=math.sqrt(2.0), scale=1.0 / math.sqrt(width))(u))
        u = l2_normalize(HyperDense(self.features)(u))
        alpha = Scaler(init=self.alpha_init, scale=1.0 / math.sqrt(self.features))(jnp.ones(self.features))
        return l2_normalize(h + alpha * (u - h))


class HyperTrunk(nn.Module):
    """Bounded trunk: embedding, blocks, then RMSNorm so heads see O(1) per-feature inputs (FlashSAC)."""

    features: int
    num_blocks: int
    expansion: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = HyperEmbedding(self.features)(x)
        for _ in range(self.num_blocks):
            h = HyperBlock(self.features, self.expansion, alpha_init=1.0 / (self.num_blocks + 1))(h)
        return RMSNorm()(h)


class MLPTrunk(nn.Module):
    """The ablation: Dense + LayerNorm + ReLU layers (ResFiT's critic), no projection, unbounded features;
    without `layer_norm` it is the bare MLP of Stable-Baselines3 (used to benchmark like for like)."""

    features: int
    num_blocks: int
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.num_blocks + 1):
            x = nn.Dense(self.features)(x)
            x = nn.relu(nn.LayerNorm()(x) if self.layer_norm else x)
        return x


def project_params(params):
    """Put projected leaves back on their spheres; every other leaf is returned unchanged.

    Works on vmapped ensembles too: the output-unit axis is always the last one and the input axis the one before it.
    """

    def project(path, leaf):
        name = getattr(path[-1], "key", None)
        if name == "hyper_kernel":
            return l2_normalize(leaf, axis=-2)
        if name == "rms_scale":
            return l2_normalize(leaf, axis=-1) * math.sqrt(leaf.shape[-1])
        return leaf

    return jax.tree_util.tree_map_with_path(project, params)

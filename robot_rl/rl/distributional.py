"""Categorical critic on a fixed support (C51 / SimbaV2): the value is a distribution over `num_bins` atoms in
[v_min, v_max], trained with cross-entropy against the Bellman-shifted target projected back onto the atoms.
Cross-entropy keeps gradient magnitudes independent of the value scale, which is what makes it stable under high UTD.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def support(v_min: float, v_max: float, num_bins: int) -> jax.Array:
    return jnp.linspace(v_min, v_max, num_bins)


def expected_value(logits: jax.Array, atoms: jax.Array) -> jax.Array:
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)


def project(target_atoms: jax.Array, probs: jax.Array, atoms: jax.Array) -> jax.Array:
    """Project the distribution `probs` sitting on `target_atoms` (B, K) onto the fixed `atoms` (K,).

    Each shifted atom splits its mass linearly between its two neighbouring fixed atoms (a hat kernel of one bin
    width); atoms beyond the ends are clipped onto them. Returns (B, K) probabilities.
    """
    width = atoms[1] - atoms[0]
    shifted = jnp.clip(target_atoms, atoms[0], atoms[-1])
    weights = jnp.clip(1.0 - jnp.abs(shifted[:, None, :] - atoms[None, :, None]) / width, 0.0, 1.0)  # (B, K_to, K_from)
    return jnp.sum(weights * probs[:, None, :], axis=-1)


def cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Per-sample cross-entropy; `logits` may carry leading ensemble axes over the same targets."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)

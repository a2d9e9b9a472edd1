"""Camera images for the learner (DrQ): a small convolutional encoder per camera, owned and trained by the critic,
and random-shift augmentation applied to training batches inside the jitted update.

Observations with cameras are dicts: `state` (B, d) float32 and one `image_<camera>` (B, H, W, 3) uint8 per camera
(the sim mirror's key names). The encoder maps them to one flat feature vector: the state followed by each camera's
`feature_dim` features. Its parameters live in the critic's parameter tree, so the critic's optimizer (and its
gradient clipping) trains them and the target critic keeps an EMA copy; the actor reads stop-gradient features of the
online encoder, so only the TD loss shapes the representation (DrQ / DrQ-v2: an actor gradient through the encoder
destabilizes learning from pixels).

Bounded norms: the conv and projection kernels are NOT weight-projected. Their output passes LayerNorm + tanh, so
the features are bounded in [-1, 1] whatever the weights do, and the bounded trunk L2-normalizes its input anyway;
unit-norm conv filters would only fix the scale of the pre-ReLU responses, which the LayerNorm already removes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robot_rl.rl.networks import CriticEnsemble

STATE = "state"  # the flat vector's key in a dict observation


class ConvEncoder(nn.Module):
    """DrQ's encoder, sized by `channels`: 3x3 convs (the first with stride 2, VALID padding) with ReLU, then a
    linear map to `feature_dim`, LayerNorm and tanh. Input uint8 pixels, scaled to [-0.5, 0.5] here."""

    channels: Sequence[int]
    feature_dim: int

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        x = image.astype(jnp.float32) / 255.0 - 0.5
        for i, width in enumerate(self.channels):
            x = nn.relu(nn.Conv(width, (3, 3), strides=2 if i == 0 else 1, padding="VALID")(x))
        x = nn.Dense(self.feature_dim)(x.reshape(x.shape[:-3] + (-1,)))
        return jnp.tanh(nn.LayerNorm()(x))


class ObservationEncoder(nn.Module):
    """Dict observation -> flat features: state, then each camera's features (one encoder per camera)."""

    image_keys: Sequence[str]
    channels: Sequence[int]
    feature_dim: int

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array]) -> jax.Array:
        features = [ConvEncoder(self.channels, self.feature_dim, name=key)(obs[key]) for key in self.image_keys]
        return jnp.concatenate([obs[STATE].astype(jnp.float32), *features], axis=-1)


class PixelCritic(nn.Module):
    """The critic ensemble with the observation encoder in front. Parameters: {"encoder": ..., "ensemble": ...}.

    `__call__(features, action)` is the ensemble on already encoded features (so the agent encodes once and reuses
    the features), `encode(obs)` the encoder, `initialize(obs, action)` both (to create every parameter)."""

    image_keys: Sequence[str]
    channels: Sequence[int]
    feature_dim: int
    num_critics: int
    hidden_dim: int
    num_blocks: int
    expansion: int
    bounded: bool
    num_outputs: int = 1
    layer_norm: bool = True

    def setup(self) -> None:
        self.encoder = ObservationEncoder(self.image_keys, self.channels, self.feature_dim)
        self.ensemble = CriticEnsemble(self.num_critics, self.hidden_dim, self.num_blocks, self.expansion,
                                       self.bounded, self.num_outputs, self.layer_norm)

    def encode(self, obs: dict[str, jax.Array]) -> jax.Array:
        return self.encoder(obs)

    def __call__(self, features: jax.Array, action: jax.Array) -> jax.Array:
        return self.ensemble(features, action)

    def initialize(self, obs: dict[str, jax.Array], action: jax.Array) -> jax.Array:
        return self.ensemble(self.encoder(obs), action)


def random_shift(images: jax.Array, key: jax.Array, pad: int) -> jax.Array:
    """DrQ's augmentation: pad each image by `pad` pixels (edge replicated) and crop it back at a random offset, i.e.
    shift every image of the batch independently by up to `pad` pixels in each direction."""
    if pad == 0:
        return images
    height, width, channels = images.shape[-3:]
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * pad + 1)
    return jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (height, width, channels)))(
        padded, offsets)

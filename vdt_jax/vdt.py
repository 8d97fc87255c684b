"""The variable dimension transform (VDT): an RGB image read as a 3-slice volume.

An image batch (N, H, W, C) of uint8 becomes a one-channel volume batch
(N, D=C, H, W, 1): the colour channels are the depth slices. In training every
sample gets its own random slice order, so the 3D network cannot rely on a
fixed R, G, B order along depth; evaluation keeps the identity order. All
channels share one mean and std (the averages of the usual ImageNet RGB
statistics), since after shuffling a slice is no longer a particular colour.

This runs on the accelerator, inside the jitted step: hosts ship compact uint8
images (4x less host->device traffic than float32 volumes) and the shuffle is
reproducible from the step's RNG key. `python -m vdt_jax.benchmark`
measures host and device placements side by side.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Means of (123.675, 116.28, 103.53) and of (58.395, 57.12, 57.375).
MEAN = 114.495
STD = 57.63


def random_depth_orders(rng: jax.Array, batch: int, depth: int) -> jax.Array:
    """One random permutation of range(depth) per sample, shape (batch, depth)."""
    return jnp.argsort(jax.random.uniform(rng, (batch, depth)), axis=-1)


def images_to_volumes(
    images: jax.Array,
    rng: jax.Array | None = None,
    *,
    mean: float = MEAN,
    std: float = STD,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """(N, H, W, C) images -> (N, C, H, W, 1) normalised volumes.

    Args:
      images: uint8 (or float) images, channels last.
      rng: if given, shuffle the depth (channel) order independently per sample.
      mean, std: one normalisation shared by every slice.
      dtype: output dtype (the model's compute dtype).

    Returns:
      The volumes, depth first, one channel.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C), got {images.shape}")
    x = images
    if rng is not None:
        orders = random_depth_orders(rng, x.shape[0], x.shape[-1])
        x = jnp.take_along_axis(x, orders[:, None, None, :], axis=-1)
    x = (x.astype(jnp.float32) - mean) / std
    return jnp.moveaxis(x, -1, 1)[..., None].astype(dtype)


def images_to_volumes_numpy(
    images: np.ndarray, rng: np.random.Generator | None = None, *, mean: float = MEAN, std: float = STD
) -> np.ndarray:
    """Host (numpy) twin of `images_to_volumes`, float32; used by the placement benchmark and tests."""
    x = images
    if rng is not None:
        orders = np.argsort(rng.random((x.shape[0], x.shape[-1])), axis=-1)
        x = np.take_along_axis(x, orders[:, None, None, :], axis=-1)
    x = (x.astype(np.float32) - mean) / std
    return np.moveaxis(x, -1, 1)[..., None]

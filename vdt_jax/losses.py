"""Losses and evaluation sums shared by pre-training and fine-tuning (all inside the jitted step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]


def classification_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> tuple[jax.Array, Metrics]:
    """Mean softmax cross-entropy with label smoothing, plus the batch's top-1 accuracy."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"accuracy": accuracy}


def classification_eval_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    """Masked sums of cross-entropy, top-1 and top-5 hits, and the example count."""
    mask = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]
    hits_k = jnp.any(top_k == labels[:, None], axis=-1)
    return {
        "loss": jnp.sum(ce * mask),
        "top1": jnp.sum((top_k[:, 0] == labels) * mask),
        f"top{k}": jnp.sum(hits_k * mask),
        "count": jnp.sum(mask),
    }


def soft_dice(probs: jax.Array, onehot: jax.Array, smooth: float = 1e-5) -> jax.Array:
    """Per-class soft Dice over the whole batch, (num_classes,); absent-and-unpredicted classes score 1."""
    axes = tuple(range(probs.ndim - 1))
    overlap = jnp.sum(probs * onehot, axis=axes)
    sizes = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
    return (2 * overlap + smooth) / (sizes + smooth)


def dice_ce_loss(logits: jax.Array, labels: jax.Array, *, dice_weight: float, ce_weight: float) -> tuple[jax.Array, Metrics]:
    """dice_weight * (1 - mean soft Dice) + ce_weight * voxel cross-entropy, for per-voxel logits (..., K)."""
    labels = labels.astype(jnp.int32)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    ce = optax.softmax_cross_entropy(logits, onehot).mean()
    dice = soft_dice(jax.nn.softmax(logits), onehot)
    loss = dice_weight * (1.0 - dice.mean()) + ce_weight * ce
    return loss, {"ce": ce, "dice": dice[1:].mean(), "voxel_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

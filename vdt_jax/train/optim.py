"""Optimizers and learning-rate schedules from the `optimizer` block of a config."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vdt_jax.errors import ConfigError


def learning_rate(config: ml_collections.ConfigDict, batch_size: int) -> float:
    """Peak learning rate: `base_lr` is per 256 examples and scales linearly (Goyal et al.)."""
    if config.scale_lr_by_batch:
        return config.base_lr * batch_size / 256.0
    return config.base_lr


WARMUPS = ("linear", "constant")


def make_schedule(config: ml_collections.ConfigDict, *, peak_lr: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """A warmup, then "cosine", "constant", "step" (x0.1 at `decay_epochs`) or "poly" decay to `min_lr`.

    Warmup lasts `warmup_steps` (if > 0) or `warmup_epochs`. "linear" rises from
    0 to the peak and the decay runs over the remaining steps; "constant" is
    mmcv's: the decay schedule runs from step 0 and is multiplied by
    `warmup_ratio` during the warmup (the reference's LIDC recipe: lr x 0.1 for
    50 iterations).
    """
    if config.warmup not in WARMUPS:
        raise ConfigError(f"unknown optimizer.warmup {config.warmup!r}; expected one of {WARMUPS}")
    warmup = config.warmup_steps if config.warmup_steps > 0 else int(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(total_steps - 1, 0))
    if config.warmup == "constant":
        decay = _decay(config, peak_lr, total_steps, steps_per_epoch, start=0)
        return lambda step: decay(step) * jnp.where(step < warmup, config.warmup_ratio, 1.0)
    decay = _decay(config, peak_lr, max(total_steps - warmup, 1), steps_per_epoch, start=warmup)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), decay], [warmup])


def _decay(config: ml_collections.ConfigDict, peak_lr: float, steps: int, steps_per_epoch: int, start: int) -> optax.Schedule:
    """The decay part of the schedule over `steps` steps, beginning at global step `start`."""
    kind = config.schedule
    if kind == "cosine":
        return optax.cosine_decay_schedule(peak_lr, steps, alpha=config.min_lr / peak_lr if peak_lr else 0.0)
    if kind == "constant":
        return optax.constant_schedule(peak_lr)
    if kind == "step":
        boundaries = {int(e * steps_per_epoch) - start: 0.1 for e in config.decay_epochs}
        return optax.piecewise_constant_schedule(peak_lr, {b: s for b, s in boundaries.items() if b > 0})
    if kind == "poly":
        return optax.polynomial_schedule(peak_lr, config.min_lr, config.poly_power, steps)
    raise ConfigError(f"unknown optimizer.schedule {kind!r}; expected cosine, constant, step or poly")


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule, trainable: Any = None
) -> optax.GradientTransformation:
    """SGD with momentum (the pre-training recipe) or Adam/AdamW (fine-tuning recipes).

    Weight decay is coupled (added to the gradient) like PyTorch's SGD and Adam,
    so the reference recipes' numbers mean the same thing here.

    Args:
      config: the `optimizer` config block.
      schedule: learning rate per step.
      trainable: optional pytree of bools shaped like the params; False leaves
        get no updates and no optimizer state (frozen stages).
    """
    tx = _base_optimizer(config, schedule)
    if trainable is None:
        return tx
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def _base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    name = config.name
    decay = optax.add_decayed_weights(config.weight_decay) if config.weight_decay else optax.identity()
    if name == "sgd":
        base = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
    elif name == "adam":
        base = optax.adam(schedule)
    elif name == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        raise ConfigError(f"unknown optimizer.name {name!r}; expected sgd, adam or adamw")
    return optax.chain(decay, base)

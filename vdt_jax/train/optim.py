"""Optimizers and learning-rate schedules from the `optimizer` block of a config."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from vdt_jax.errors import ConfigError


def learning_rate(config: ml_collections.ConfigDict, batch_size: int) -> float:
    """Peak learning rate: `base_lr` is per 256 examples and scales linearly (Goyal et al.)."""
    if config.scale_lr_by_batch:
        return config.base_lr * batch_size / 256.0
    return config.base_lr


def make_schedule(config: ml_collections.ConfigDict, *, peak_lr: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Linear warmup, then "cosine" (to 0), "constant", "step" (x0.1 at `decay_epochs`) or "poly" decay."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(total_steps - 1, 0))
    rest = max(total_steps - warmup, 1)
    kind = config.schedule
    if kind == "cosine":
        main = optax.cosine_decay_schedule(peak_lr, rest)
    elif kind == "constant":
        main = optax.constant_schedule(peak_lr)
    elif kind == "step":
        boundaries = {int(e * steps_per_epoch) - warmup: 0.1 for e in config.decay_epochs}
        main = optax.piecewise_constant_schedule(peak_lr, {b: s for b, s in boundaries.items() if b > 0})
    elif kind == "poly":
        main = optax.polynomial_schedule(peak_lr, 0.0, config.poly_power, rest)
    else:
        raise ConfigError(f"unknown optimizer.schedule {kind!r}; expected cosine, constant, step or poly")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), main], [warmup])


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

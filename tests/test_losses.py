"""Tests of vdt_jax.losses: the segmentation Dice + cross-entropy loss against a direct computation."""

import jax
import jax.numpy as jnp
import numpy as np

from vdt_jax import losses


def test_soft_dice_per_class():
    probs = jnp.array([[0.8, 0.2], [0.4, 0.6], [1.0, 0.0]])
    onehot = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    dice = np.asarray(losses.soft_dice(probs, onehot, smooth=0.0))
    np.testing.assert_allclose(dice, [2 * 1.8 / (2.2 + 2), 2 * 0.6 / (0.8 + 1)], rtol=1e-6)
    # A class absent from both the labels and the prediction scores 1, not 0/0.
    absent = losses.soft_dice(jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(absent, [1.0, 1.0], rtol=1e-5)


def test_dice_ce_loss_weights_its_two_terms():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 3))
    labels = jax.random.randint(jax.random.key(1), (2, 3, 4, 4), 0, 3)
    onehot = jax.nn.one_hot(labels, 3)
    ce = -np.mean(np.sum(np.asarray(onehot) * np.asarray(jax.nn.log_softmax(logits)), -1))
    dice = np.asarray(losses.soft_dice(jax.nn.softmax(logits), onehot))
    loss, metrics = losses.dice_ce_loss(logits, labels, dice_weight=1.0, ce_weight=0.3)
    np.testing.assert_allclose(loss, (1 - dice.mean()) + 0.3 * ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["dice"], dice[1:].mean(), rtol=1e-5)

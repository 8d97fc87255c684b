"""Tests of vdt_jax.losses: the segmentation Dice + cross-entropy loss against a direct computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_squared_per_sample_dice_ce_equals_monai_dice_ce_as_the_bcv_recipe_sets_it():
    torch = pytest.importorskip("torch")
    monai_losses = pytest.importorskip("monai.losses")
    logits = jax.random.normal(jax.random.key(2), (2, 3, 4, 5, 4))
    labels = jax.random.randint(jax.random.key(3), (2, 3, 4, 5), 0, 4)
    loss, _ = losses.dice_ce_loss(
        logits, labels, dice_weight=1.0, ce_weight=0.3, dice_denominator="squares", dice_per_sample=True
    )
    # The reference's DiceCELoss is MONAI's: softmax, background included, squared_pred, per sample.
    reference = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, lambda_ce=0.3)
    expected = reference(
        torch.from_numpy(np.moveaxis(np.asarray(logits), -1, 1).copy()), torch.from_numpy(np.asarray(labels)[:, None].copy())
    )
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_the_lits_dice_form_scores_a_perfect_prediction_two_thirds():
    onehot = jax.nn.one_hot(jnp.array([[0, 1, 1, 0], [0, 0, 0, 0]]), 2)
    dice = np.asarray(losses.soft_dice(onehot, onehot, 0.001, denominator="sum_plus_overlap", per_sample=True))
    # 2I / (I + sum p + sum g) = 2 * 2 / (2 + 4) for the liver of sample 0; sample 1 has no liver and
    # predicts none: the smooth term enters the numerator only there, so it scores 1.
    np.testing.assert_allclose(dice[:, 1], [4 / 6.001, 0.001 / 0.001], rtol=1e-6)
    logits = 4.0 * (onehot - 0.5)
    labels = jnp.array([[0, 1, 1, 0], [0, 0, 0, 0]])
    loss, _ = losses.dice_ce_loss(
        logits, labels, dice_weight=0.5, ce_weight=1.0, dice_denominator="sum_plus_overlap",
        dice_per_sample=True, dice_background=False, dice_smooth=0.001,
    )
    probs = np.asarray(jax.nn.softmax(logits))
    g = np.asarray(onehot)
    overlap, union = (probs * g).sum((1,))[:, 1], (probs + g).sum((1,))[:, 1]
    per_sample = 2 * overlap / (overlap + union + 0.001)  # no empty unions: the softmax is never exactly 0
    ce = -np.mean(np.log((probs * g).sum(-1)))
    np.testing.assert_allclose(float(loss), 0.5 * (1 - per_sample.mean()) + ce, rtol=1e-5)
    with pytest.raises(ValueError, match="loss.dice_denominator must be one of"):
        losses.soft_dice(onehot, onehot, denominator="cubes")

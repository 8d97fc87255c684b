"""Tests of vdt_jax.pretrain.vdt_classification: the pre-training task's in-step inputs and loss."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.fakes import ArrayTask, tiny_config


def test_depth_shuffle_is_per_sample_and_off_in_eval():
    task = ArrayTask(tiny_config())
    images = jnp.asarray(task.images[:8])
    train_volumes = task.prepare_inputs({"image": images}, jax.random.key(0), train=True)
    eval_volumes = task.prepare_inputs({"image": images}, None, train=False)
    assert train_volumes.shape == (8, 3, 16, 16, 1)
    np.testing.assert_allclose(eval_volumes[:, 1, :, :, 0], (images[..., 1] - 114.495) / 57.63, rtol=1e-6)
    # Each training volume is a permutation of the eval volume's slices, not all the same one.
    orders = []
    for t, e in zip(np.asarray(train_volumes), np.asarray(eval_volumes)):
        order = [next(j for j in range(3) if np.array_equal(t[i], e[j])) for i in range(3)]
        assert sorted(order) == [0, 1, 2]
        orders.append(tuple(order))
    assert len(set(orders)) > 1



def test_shuffle_depth_off_keeps_the_colour_order_in_training():
    task = ArrayTask(tiny_config(**{"vdt.shuffle_depth": False}))
    images = jnp.asarray(task.images[:8])
    train_volumes = task.prepare_inputs({"image": images}, jax.random.key(0), train=True)
    np.testing.assert_array_equal(train_volumes, task.prepare_inputs({"image": images}, None, train=False))


def test_loss_smooths_labels_and_eval_sums_are_masked():
    task = ArrayTask(tiny_config(**{"optimizer.label_smoothing": 0.1}))
    logits = jnp.array([[2.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 3])
    loss, metrics = task.loss(logits, {"label": labels})
    targets = np.full((3, 4), 0.1 / 4) + 0.9 * np.eye(4)[np.asarray(labels)]
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    np.testing.assert_allclose(loss, -(targets * log_probs).sum(-1).mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3, rtol=1e-6)
    sums = task.eval_metrics(logits, {"label": labels, "mask": jnp.array([True, True, False])})
    assert float(sums["count"]) == 2 and float(sums["top1"]) == 2 and float(sums["top4"]) == 2
    np.testing.assert_allclose(sums["loss"], -(log_probs[0, 0] + log_probs[1, 1]), rtol=1e-6)

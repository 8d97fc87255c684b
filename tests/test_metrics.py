"""Tests of vdt_jax.finetune.metrics: ROC AUC, confusion matrix and Dice against direct counts."""

import itertools

import numpy as np

from vdt_jax.finetune import metrics


def test_auc_counts_ordered_pairs_and_half_of_the_ties():
    scores = np.array([0.9, 0.4, 0.4, 0.2, 0.7])
    positives = np.array([True, True, False, False, False])
    pairs = [(p, n) for p, n in itertools.product(scores[positives], scores[~positives])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert metrics.binary_auc(scores, positives) == expected
    assert np.isnan(metrics.binary_auc(scores, np.zeros(5, bool)))


def test_classification_metrics_and_confusion_matrix():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    result = metrics.classification_metrics(probs, labels, ("benign", "malignant"))
    assert result["accuracy"] == 0.75 and result["num_examples"] == 4
    assert result["confusion/malignant_as_benign"] == 1 and result["confusion/benign_as_benign"] == 1
    np.testing.assert_allclose(result["loss"], -np.mean(np.log([0.9, 0.7, 0.4, 0.8])), rtol=1e-9)
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, probs.argmax(-1), 2), [[1, 0], [1, 2]])


def test_dice_per_class_leaves_out_classes_absent_from_both():
    truth = np.array([[0, 1, 1, 0]])
    prediction = np.array([[0, 1, 0, 2]])
    dice = metrics.dice_per_class(prediction, truth, 4)
    np.testing.assert_allclose(dice[:3], [2 * 1 / 4, 2 * 1 / 3, 0.0])
    assert np.isnan(dice[3])
    summary = metrics.summarise_dice([dice, np.array([1.0, 0.5, np.nan, np.nan])], ("bg", "a", "b", "c"))
    assert summary["dice/a"] == (2 / 3 + 0.5) / 2 and summary["dice/b"] == 0.0 and np.isnan(summary["dice/c"])
    assert summary["mean_dice"] == np.mean([(2 / 3 + 0.5) / 2, 0.0])

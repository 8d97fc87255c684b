"""Tests of vdt_jax.finetune.metrics: ROC AUC, confusion matrix and Dice against direct counts."""

import itertools

import numpy as np
import pytest

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


def test_pooled_dice_sums_overlaps_and_sizes_over_cases():
    big_truth, big_prediction = np.array([1] * 90 + [0] * 10), np.array([1] * 80 + [0] * 20)
    small_truth, small_prediction = np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1])
    counts = [metrics.dice_counts(big_prediction, big_truth, 3), metrics.dice_counts(small_prediction, small_truth, 3)]
    pooled = metrics.pooled_dice(counts, ("bg", "organ", "never"))
    assert pooled["dice/organ"] == 2 * 80 / (90 + 80 + 2 + 2)  # the large case dominates
    per_case = metrics.summarise_dice([metrics.dice_from_counts(*c) for c in counts], ("bg", "organ", "never"))
    assert per_case["dice/organ"] == (2 * 80 / 170 + 0.0) / 2
    assert pooled["dice/never"] == 1.0 and pooled["mean_dice"] == (pooled["dice/organ"] + 1.0) / 2  # as mmseg's eps rule


def test_keep_largest_component_uses_face_neighbours_over_all_foreground_classes():
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[0:2, 0:2, 0:2] = 1  # 8 voxels of class 1 ...
    labels[1, 1, 2] = 2  # ... touching one voxel of class 2 by a face: one component of 9
    labels[3, 5, 5] = 1  # a separate voxel
    labels[3, 3:6, 0] = 2  # a separate component of 3
    labels[2, 2, 3] = 1  # meets (1, 1, 2) only at a corner: not connected with 6-connectivity
    kept = metrics.keep_largest_component(labels)
    expected = np.zeros_like(labels)
    expected[0:2, 0:2, 0:2] = 1
    expected[1, 1, 2] = 2
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(metrics.keep_largest_component(np.zeros((2, 2, 2), np.uint8)), 0)


def test_tuned_threshold_metrics_pick_the_best_of_ten_thresholds_on_the_same_data():
    probs1 = np.array([0.05, 0.15, 0.35, 0.45, 0.55, 0.62, 0.72, 0.95])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    result = metrics.tuned_threshold_metrics(np.stack([1 - probs1, probs1], 1), labels)
    # Direct search: sensitivity + specificity of "p > t" for t = 0, 0.1, ..., 0.9; the first best wins.
    sums = [((probs1 > t) & (labels == 1)).sum() / 4 + ((probs1 <= t) & (labels == 0)).sum() / 4 for t in np.arange(0, 1, 0.1)]
    best = np.arange(0, 1, 0.1)[int(np.argmax(sums))]
    assert result["tuned/threshold"] == best == 0.2  # 0.2 and 0.3 tie (1.5); the first is kept
    predicted = probs1 > best
    assert result["tuned/accuracy"] == np.mean(predicted == (labels == 1)) == 0.75
    assert result["tuned/sensitivity"] == 1.0 and result["tuned/precision"] == 4 / 6
    assert result["tuned/specificity"] == pytest.approx(2 / 4, abs=1e-6)
    assert result["tuned/f1"] == pytest.approx(2 * (4 / 6) / (4 / 6 + 1))

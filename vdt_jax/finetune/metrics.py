"""Evaluation metrics on the host (numpy): accuracy, ROC AUC, confusion matrix, Dice."""

from __future__ import annotations

import numpy as np
from scipy import stats


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def binary_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN without both classes."""
    positives = np.asarray(positives, bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)  # average ranks for ties
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Binary: AUC of the class-1 probability. More classes: macro average of one-vs-rest AUCs."""
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        return binary_auc(probabilities[:, 1], labels == 1)
    aucs = [binary_auc(probabilities[:, c], labels == c) for c in range(num_classes)]
    return float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """Accuracy, AUC, mean cross-entropy and the confusion matrix as flat 'confusion/<true>_as_<pred>' counts."""
    labels = np.asarray(labels, np.int64)
    predictions = probabilities.argmax(-1)
    matrix = confusion_matrix(labels, predictions, len(class_names))
    eps = 1e-12
    out = {
        "num_examples": float(len(labels)),
        "accuracy": float(np.mean(predictions == labels)),
        "auc": roc_auc(probabilities, labels),
        "loss": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + eps))),
    }
    for t, true_name in enumerate(class_names):
        for p, predicted_name in enumerate(class_names):
            out[f"confusion/{true_name}_as_{predicted_name}"] = float(matrix[t, p])
    return out


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each class (index 0 = background) for one volume; NaN where the class is in neither."""
    prediction, truth = np.asarray(prediction).ravel(), np.asarray(truth).ravel()
    joint = np.bincount(truth.astype(np.int64) * num_classes + prediction.astype(np.int64), minlength=num_classes**2)
    matrix = joint.reshape(num_classes, num_classes)
    overlap = np.diag(matrix).astype(np.float64)
    sizes = matrix.sum(0) + matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * overlap / sizes, np.nan)


def summarise_dice(per_case: list[np.ndarray], class_names: tuple[str, ...]) -> dict[str, float]:
    """Mean Dice per foreground class over the cases where it is defined, and their mean ('mean_dice')."""
    table = np.stack(per_case)  # (cases, classes)
    out: dict[str, float] = {"num_examples": float(len(per_case))}
    means = []
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        column = table[:, c]
        value = float(np.nanmean(column)) if np.any(~np.isnan(column)) else float("nan")
        out[f"dice/{name}"] = value
        means.append(value)
    out["mean_dice"] = float(np.nanmean(means)) if np.any(~np.isnan(means)) else float("nan")
    return out

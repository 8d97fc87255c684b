"""Evaluation metrics on the host (numpy): accuracy, ROC AUC, confusion matrix, Dice (per case or pooled)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats


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


def dice_counts(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class (index 0 = background): the overlap |P & G| and the sizes |P| + |G| of one volume, float64."""
    prediction, truth = np.asarray(prediction).ravel(), np.asarray(truth).ravel()
    joint = np.bincount(truth.astype(np.int64) * num_classes + prediction.astype(np.int64), minlength=num_classes**2)
    matrix = joint.reshape(num_classes, num_classes)
    return np.diag(matrix).astype(np.float64), (matrix.sum(0) + matrix.sum(1)).astype(np.float64)


def dice_from_counts(overlap: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """2 overlap / sizes per class; NaN where the class is in neither prediction nor truth."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * overlap / sizes, np.nan)


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each class (index 0 = background) for one volume; NaN where the class is in neither."""
    return dice_from_counts(*dice_counts(prediction, truth, num_classes))


def pooled_dice(counts: list[tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...]) -> dict[str, float]:
    """Dice per foreground class over all cases pooled (summed overlaps / summed sizes), and their mean.

    The reference's mDice3D: one Dice per class over the whole evaluation set,
    so large cases weigh more than in the per-case mean (`summarise_dice`). A
    class absent from every case and prediction scores 1, as there.
    """
    overlap = np.sum([c[0] for c in counts], axis=0)
    sizes = np.sum([c[1] for c in counts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2 * overlap / sizes, 1.0)
    out = {"num_examples": float(len(counts))}
    out.update({f"dice/{name}": float(dice[c]) for c, name in enumerate(class_names) if c > 0})
    out["mean_dice"] = float(np.mean(dice[1:]))
    return out


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """`labels` with every foreground voxel outside the largest 6-connected foreground component set to 0.

    The reference's LiTS test post-processing: components of the mask of all
    foreground classes together (scipy's default 3D structure, face neighbours).
    """
    components, count = ndimage.label(np.asarray(labels) > 0)
    if count <= 1:
        return np.asarray(labels)
    largest = 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    return np.where(components == largest, labels, 0).astype(np.asarray(labels).dtype)


def tuned_threshold_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Binary metrics at the threshold in {0, 0.1, ..., 0.9} that maximises sensitivity + specificity on these data.

    The reference's LIDC evaluation (mmcls `metric='all'`). The threshold is
    chosen on the very predictions it scores, so these figures are optimistic
    (a bug there): report them only to compare with the reference's numbers.
    ROC AUC does not depend on a threshold.
    """
    if probabilities.shape[1] != 2:
        raise ValueError(f"eval.tuned_threshold needs 2 classes; got {probabilities.shape[1]}")
    scores, positive = probabilities[:, 1], np.asarray(labels) == np.max(labels)

    def rates(threshold: float) -> tuple[float, float, np.ndarray]:
        predicted = scores > threshold
        sensitivity = np.sum(predicted & positive) / (np.sum(positive) + 1e-6)
        specificity = np.sum(~predicted & ~positive) / (np.sum(~positive) + 1e-6)
        return float(sensitivity), float(specificity), predicted

    best = max(np.arange(0, 1, 0.1), key=lambda t: sum(rates(t)[:2]))  # the first of equal maxima, as there
    _, specificity, predicted = rates(best)
    true_positives = float(np.sum(predicted & positive))
    precision = true_positives / max(float(np.sum(predicted)), 1.0)  # 0 when nothing is predicted, as sklearn
    sensitivity = true_positives / max(float(np.sum(positive)), 1.0)
    f1 = 2 * precision * sensitivity / (precision + sensitivity) if precision + sensitivity else 0.0
    return {
        "tuned/threshold": float(best),
        "tuned/accuracy": float(np.mean(predicted == positive)),
        "tuned/sensitivity": sensitivity,
        "tuned/specificity": specificity,
        "tuned/precision": precision,
        "tuned/f1": f1,
    }


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

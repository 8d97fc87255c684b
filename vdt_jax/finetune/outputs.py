"""What fine-tuning evaluations write: prediction tables, metrics, NIfTI predictions and PNG overlays.

Every file is written atomically (`vdt_jax.atomic`), so an interrupted run
never leaves a half-written file or loses the previous one.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from vdt_jax.atomic import write_text_atomic
from vdt_jax.finetune import figures, metrics, nifti
from vdt_jax.finetune.volume_cache import Volume


def case_name(path: str) -> str:
    """The file name without its NIfTI extension: "imagesTr/case_01.nii.gz" -> "case_01"."""
    name = os.path.basename(path)
    for extension in nifti.NIFTI_EXTENSIONS[::-1]:
        if name.endswith(extension):
            return name[: -len(extension)]
    return os.path.splitext(name)[0]


def csv_text(rows: Sequence[Sequence[object]]) -> str:
    return "".join(",".join(map(str, row)) + "\n" for row in rows)


def write_classification_results(
    output_dir: str,
    rows: Sequence[tuple[str, str]],
    probs: np.ndarray,
    labels: np.ndarray,
    result: dict[str, float],
    class_names: Sequence[str],
) -> None:
    """`eval_predictions.csv` (per example: image, where, label, prediction, probabilities) and `eval_metrics.json`.

    Args:
      output_dir: the run's workdir.
      rows: (image path, manifest row) of each example, in order.
      probs: (N, K) class probabilities; labels: (N,) true classes.
      result: the metrics (`metrics.classification_metrics`).
      class_names: the K class names.
    """
    lines = [["image", "where", "label", "prediction", *[f"p_{n}" for n in class_names]]]
    for (image, where), p, label in zip(rows, probs, labels):
        lines.append([image, where, int(label), int(p.argmax()), *[f"{v:.6f}" for v in p]])
    write_text_atomic(os.path.join(output_dir, "eval_predictions.csv"), csv_text(lines))
    matrix = metrics.confusion_matrix(labels, probs.argmax(-1), len(class_names)).tolist()
    summary = {**result, "confusion_matrix": {"rows_true_columns_predicted": list(class_names), "counts": matrix}}
    write_text_atomic(os.path.join(output_dir, "eval_metrics.json"), json.dumps(summary, indent=2) + "\n")


def write_case_prediction(
    folder: str,
    name: str,
    volume: Volume,
    prediction: np.ndarray,
    at_source: np.ndarray,
    dice: np.ndarray,
    class_names: Sequence[str],
    figure_slices: int,
) -> None:
    """`<name>.nii.gz` in the source file's grid and header, and `<name>.png` (image, truth, prediction).

    Args:
      folder: where to write (the run's `predictions/`).
      name: the case name.
      volume: the cached evaluation volume (its geometry, image and label).
      prediction: (D, H, W) uint8 labels in model space (the overlay's grid).
      at_source: the same labels resampled to the file's canonical grid.
      dice: per-class Dice of the case (for the figure title).
      class_names: names, background first.
      figure_slices: axial slices in the figure.
    """
    nifti.save_label(os.path.join(folder, name + ".nii.gz"), at_source, volume.geometry)
    figures.segmentation_overlay(
        os.path.join(folder, name + ".png"),
        volume.image()[..., 0],
        np.asarray(volume.label()),
        prediction,
        class_names,
        num_slices=figure_slices,
        title=f"{name}: Dice " + ", ".join(f"{n} {d:.3f}" for n, d in zip(class_names[1:], dice[1:])),
    )


def write_dice_table(
    output_dir: str, images: Sequence[str], dice: Sequence[np.ndarray], result: dict[str, float], class_names: Sequence[str]
) -> None:
    """`predictions/dice.csv` (per case and foreground class) and `eval_metrics.json`."""
    lines = [["case", "image", *class_names[1:]]]
    for image, row in zip(images, dice):
        lines.append([case_name(image), image, *[f"{d:.4f}" for d in row[1:]]])
    write_text_atomic(os.path.join(output_dir, "predictions", "dice.csv"), csv_text(lines))
    write_text_atomic(os.path.join(output_dir, "eval_metrics.json"), json.dumps(result, indent=2) + "\n")

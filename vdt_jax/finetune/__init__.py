"""Fine-tuning on 3D medical volumes: classification and segmentation from NIfTI files.

    python -m vdt_jax.finetune                     # the demo (configs/finetune_default.py)
    python -m vdt_jax.finetune.sweep               # label efficiency: pre-trained vs scratch

Modules:
  nifti           reading, checks, orientation, resampling, writing NIfTI
  manifests       classification manifests, Decathlon dataset.json, subsets
  volume_cache    the preprocessed-volume cache and its grain sources
  augment         crops, flips and rotations of volumes (grain transforms)
  sliding_window  whole-volume inference with overlapping windows (float32, slab by slab)
  window_eval     the window stream and stitching training's evaluation and predict share
  metrics         accuracy, ROC AUC, confusion matrix, Dice
  outputs         prediction tables, NIfTI predictions, PNG overlays
  figures         the PNG drawings (overlays, label-efficiency plot)
  synthetic       generated CT demo datasets
  base            what both tasks share (data, init_from, freezing)
  contract        a run's model-card fields: architecture, classes, preprocessing, PyTorch code
  classification  `Classification3DTask`
  segmentation    `SegmentationTask`
  sweep           the label-efficiency sweep
"""

from __future__ import annotations

import ml_collections

TASKS = ("classification", "segmentation")


def make_task(config: ml_collections.ConfigDict, output_dir: str | None = None):
    """The fine-tuning `Task` that `config.task` names: "classification" or "segmentation"."""
    if config.task not in TASKS:
        raise ValueError(f"unknown config.task {config.task!r}; expected one of {TASKS}")
    if config.task == "classification":
        from vdt_jax.finetune.classification import Classification3DTask

        return Classification3DTask(config, output_dir=output_dir)
    from vdt_jax.finetune.segmentation import SegmentationTask

    return SegmentationTask(config, output_dir=output_dir)

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

`check_config` (here) holds the cheap checks the entry points run before any
data generation, preprocessing or compilation; `make_task` builds the task.
"""

from __future__ import annotations

import ml_collections

from vdt_jax import storage
from vdt_jax.errors import ConfigError

TASKS = ("classification", "segmentation")
DATA_PATH_WHAT = {"classification": "a CSV/JSON manifest", "segmentation": "a dataset.json"}


def check_config(config: ml_collections.ConfigDict) -> None:
    """The cheap checks, before any data generation, preprocessing or compilation (the entry points run them).

    Raises:
      UserError: an unknown task, a data.path or init_from that does not
        exist, no data at all, a classification without class names, a
        manifest or dataset.json with a mistake, a listed file that is missing
        or not NIfTI.
    """
    check_settings(config)
    if config.data.path:
        check_data_files(config)


def check_settings(config: ml_collections.ConfigDict) -> None:
    """`check_config` without reading the data files."""
    if config.task not in TASKS:
        raise ConfigError(f"unknown --config.task={config.task!r}; expected one of {TASKS}")
    if config.data.path:
        storage.check_exists(config.data.path, "--config.data.path")
    elif not config.data.synthetic:
        raise ConfigError(
            f"set --config.data.path to {DATA_PATH_WHAT[config.task]}: data.synthetic is empty, so no demo data is made"
        )
    if config.init_from not in ("", "auto"):
        storage.check_exists(config.init_from, "--config.init_from")
    if config.task == "classification" and not config.data.class_names:
        raise ConfigError("set --config.data.class_names, e.g. ('benign', 'malignant'): the manifest's labels index them")


def check_data_files(config: ml_collections.ConfigDict) -> None:
    """Reads data.path (manifest or dataset.json) and the header of every file it lists; seconds, not minutes.

    Raises:
      ManifestError, NiftiError: naming the file and the manifest row.
    """
    from vdt_jax.finetune import manifests, nifti

    data = config.data
    if config.task == "classification":
        rows = manifests.read_manifest(data.path, len(data.class_names))
        splits = [manifests.SPLIT_ALIASES.get(s, s) for s in (data.train_split, data.eval_split)]
        for split, field in zip(splits, ("train_split", "eval_split")):
            if not any(row.split == split for row in rows):
                raise ConfigError(f"{data.path} has no rows in split {split!r} (--config.data.{field})")
        listed = [(row.image, row.where) for row in rows if row.split in splits]
    else:
        train, val, _ = manifests.read_decathlon(
            data.path, train_key=data.train_key, eval_key=data.eval_key, num_val_cases=data.num_val_cases
        )
        listed = [(path, case.where) for case in train + val for path in (case.image, case.label)]
    checked = set()
    for path, where in listed:  # each file once, named by the first row that lists it
        if path not in checked:
            nifti.check_readable(path, where)
            checked.add(path)


def make_task(config: ml_collections.ConfigDict, output_dir: str | None = None):
    """The fine-tuning `Task` that `config.task` names: "classification" or "segmentation"."""
    check_settings(config)
    if config.task == "classification":
        from vdt_jax.finetune.classification import Classification3DTask

        return Classification3DTask(config, output_dir=output_dir)
    from vdt_jax.finetune.segmentation import SegmentationTask

    return SegmentationTask(config, output_dir=output_dir)

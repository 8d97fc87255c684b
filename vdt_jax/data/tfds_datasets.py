"""Image datasets on disk (TFDS, ArrayRecord): make sure one is prepared, and describe it.

  prepare_dataset(data_config)  generates the built-in `vdt_shapes` on first use,
                                checks any other dataset is prepared as ArrayRecord
                                (if not, the error says how to prepare it)
  dataset_info(data_config)     number of classes and examples

Part of `vdt_jax.data.images` (which re-exports both), kept apart because it
imports TFDS only (not grain or JAX), and only once it needs it: the
pre-training entry point checks the dataset with it before anything heavier
loads, and a dataset whose folder is missing is reported without TFDS at all.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from vdt_jax.errors import ConfigError, UserError


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The dataset is not on disk and cannot be generated here; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the schedule need to know about a dataset."""

    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    class_names: tuple[str, ...] = ()


def _builder(data_config: ml_collections.ConfigDict) -> Any:
    """The TFDS builder (TFDS is imported here: a missing dataset is reported without it, see `_check_folder`)."""
    import tensorflow_datasets as tfds

    from vdt_jax.data import shapes  # noqa: F401  (registers the `vdt_shapes` builder)

    return tfds.builder(data_config.name, data_dir=data_config.data_dir)


def _base_name(name: str) -> str:
    """'vdt_shapes/tiny:1.0.0' -> 'vdt_shapes'."""
    return name.split("/")[0].split(":")[0]


def _imagenet_instructions(root: str, data_path: str) -> str:
    return f"""\
Prepare ImageNet once (this takes hours and needs TensorFlow: `pip install -e .[prepare]`).
Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org
(registration needed) into one directory, then run:

    import tensorflow_datasets as tfds
    builder = tfds.builder("imagenet2012", data_dir="{root}")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/the/tars"))

The ArrayRecord files are written to {data_path}.
(Without manual_dir, TFDS looks for the tars in {root}/downloads/manual.)"""


def prepare_dataset(data_config: ml_collections.ConfigDict) -> None:
    """Makes sure the dataset is prepared as ArrayRecord files under data_config.data_dir.

    `vdt_shapes` is generated on the spot (offline, seconds). Any other dataset
    must have been prepared beforehand; if it is missing the error says how.

    Raises:
      DatasetNotPreparedError: the dataset is not prepared and cannot be generated here.
      ConfigError: it is prepared, but not as ArrayRecord, or lacks a split.
    """
    _check_folder(data_config)
    builder = _builder(data_config)
    if not builder.is_prepared():
        if _base_name(data_config.name) != "vdt_shapes":
            raise _not_prepared(data_config.name, str(builder.data_dir_root), str(builder.data_path))
        import tensorflow_datasets as tfds

        builder.download_and_prepare(
            file_format="array_record",
            # Nothing to fetch: never look the dataset up on GCS.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    _check_prepared(builder, data_config)


def _not_prepared(name: str, root: str, data_path: str) -> DatasetNotPreparedError:
    message = f"dataset {name!r} is not prepared: {data_path} does not exist."
    if _base_name(name) == "imagenet2012":
        message += "\n" + _imagenet_instructions(root, data_path)
    return DatasetNotPreparedError(message)


def _check_folder(data_config: ml_collections.ConfigDict) -> None:
    """Without TFDS (seconds): a dataset other than `vdt_shapes` whose folder is missing is not prepared."""
    root = os.path.expanduser(data_config.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
    base = _base_name(data_config.name)
    if base != "vdt_shapes" and "://" not in root and not os.path.isdir(os.path.join(root, base)):
        raise _not_prepared(data_config.name, root, os.path.join(root, base))


def _check_prepared(builder: Any, data_config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError unless the dataset can be read by `tfds.data_source`."""
    formats = {f.value for f in builder.info.available_file_formats()}
    if "array_record" not in formats:
        raise ConfigError(
            f"dataset {data_config.name!r} at {builder.data_path} is stored as {sorted(formats)}, but grain "
            "needs random access: prepare it again with download_and_prepare(file_format='array_record') "
            "into another data_dir (or after deleting that directory)"
        )
    for key in ("train_split", "eval_split"):
        split = data_config[key]
        try:
            builder.info.splits[split]
        except (KeyError, ValueError) as error:
            raise ConfigError(
                f"data.{key}={split!r} is not a split of {data_config.name!r} "
                f"(available: {sorted(builder.info.splits)})"
            ) from error


def dataset_info(data_config: ml_collections.ConfigDict) -> DatasetInfo:
    """Class and example counts of a prepared dataset."""
    info = _builder(data_config).info
    return DatasetInfo(
        num_classes=info.features["label"].num_classes,
        class_names=tuple(info.features["label"].names),
        num_train_examples=info.splits[data_config.train_split].num_examples,
        num_eval_examples=info.splits[data_config.eval_split].num_examples,
    )

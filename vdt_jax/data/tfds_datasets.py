"""Image datasets on disk (TFDS, ArrayRecord): make sure one is prepared, and describe it.

  prepare_dataset(data_config)  generates the built-in `vdt_shapes` on first use,
                                checks any other dataset is prepared as ArrayRecord
                                (if not, the error says how to prepare it)
  dataset_info(data_config)     number of classes and examples

Part of `vdt_jax.data.images` (which re-exports both), kept apart because it
imports TFDS only, not grain or JAX: the pre-training entry point checks the
dataset with it in seconds, before anything heavier loads.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import tensorflow_datasets as tfds

from vdt_jax.data import shapes  # noqa: F401  (registers the `vdt_shapes` builder)
from vdt_jax.errors import ConfigError, UserError


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The dataset is not on disk and cannot be generated here; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the schedule need to know about a dataset."""

    num_classes: int
    num_train_examples: int
    num_eval_examples: int


def _builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return tfds.builder(data_config.name, data_dir=data_config.data_dir)


def _base_name(name: str) -> str:
    """'vdt_shapes/tiny:1.0.0' -> 'vdt_shapes'."""
    return name.split("/")[0].split(":")[0]


def _imagenet_instructions(builder: tfds.core.DatasetBuilder) -> str:
    root = builder.data_dir_root
    return f"""\
Prepare ImageNet once (this takes hours and needs TensorFlow: `pip install -e .[prepare]`).
Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org
(registration needed) into one directory, then run:

    import tensorflow_datasets as tfds
    builder = tfds.builder("imagenet2012", data_dir="{root}")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/the/tars"))

The ArrayRecord files are written to {builder.data_path}.
(Without manual_dir, TFDS looks for the tars in {root}/downloads/manual.)"""


def prepare_dataset(data_config: ml_collections.ConfigDict) -> None:
    """Makes sure the dataset is prepared as ArrayRecord files under data_config.data_dir.

    `vdt_shapes` is generated on the spot (offline, seconds). Any other dataset
    must have been prepared beforehand; if it is missing the error says how.

    Raises:
      DatasetNotPreparedError: the dataset is not prepared and cannot be generated here.
      ConfigError: it is prepared, but not as ArrayRecord, or lacks a split.
    """
    builder = _builder(data_config)
    if not builder.is_prepared():
        if _base_name(data_config.name) != "vdt_shapes":
            message = f"dataset {data_config.name!r} is not prepared: {builder.data_path} does not exist."
            if _base_name(data_config.name) == "imagenet2012":
                message += "\n" + _imagenet_instructions(builder)
            raise DatasetNotPreparedError(message)
        builder.download_and_prepare(
            file_format="array_record",
            # Nothing to fetch: never look the dataset up on GCS.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    _check_prepared(builder, data_config)


def _check_prepared(builder: tfds.core.DatasetBuilder, data_config: ml_collections.ConfigDict) -> None:
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
        num_train_examples=info.splits[data_config.train_split].num_examples,
        num_eval_examples=info.splits[data_config.eval_split].num_examples,
    )

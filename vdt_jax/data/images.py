"""Image datasets for pre-training: TFDS ArrayRecord datasets read with grain.

The pre-training task calls four functions:

  prepare_dataset(data_config)  makes sure the dataset exists on disk
  dataset_info(data_config)     number of classes and examples
  train_loader(data_config, seed=..., per_process_batch=..., process_index=...,
               process_count=...)
                                an infinite, shuffled, checkpointable
                                `grain.DataLoader` of this process's shard
                                (built by `vdt_jax.data.loading`)
  eval_batches(data_config, per_process_batch=..., process_index=...,
               process_count=...)
                                one padded, masked pass over this process's
                                share of the evaluation split

Batches hold compact host data, `{'image': uint8 (B, H, W, 3) RGB,
'label': int32 (B,)}` (plus `'mask': bool (B,)` for evaluation); the variable
dimension transform runs on the accelerator (`vdt_jax.vdt`).

Fields of `data_config` (an ml_collections.ConfigDict):
  name             TFDS name: 'vdt_shapes' (the built-in generated dataset,
                   default config 'demo'), 'vdt_shapes/<config>' (e.g. 'tiny'),
                   or 'imagenet2012' (must be prepared by hand, see
                   `prepare_dataset`). Any TFDS name with 'image'/'label'
                   features, prepared as ArrayRecord, works too.
  data_dir         TFDS data directory, or None for TFDS's default
                   ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  train_split      split to train on, e.g. 'train' (TFDS slicing such as
                   'train[:90%]' works).
  eval_split       split to evaluate on, e.g. 'validation'.
  image_size       side of the square crops fed to the network (224 for
                   ImageNet).
  eval_resize      evaluation resizes the shorter side to this, then takes the
                   central image_size crop (256 for ImageNet).
  num_workers      grain worker processes for the host transforms; 0 runs them
                   in the calling process.
  prefetch_buffer  batches each worker process prepares ahead (with
                   num_workers=0: prefetch_buffer batches' worth of records are
                   read ahead by reader threads).
  min_crop_scale   smallest area fraction of RandomResizedCrop (0.08 for ImageNet).

The generated `vdt_shapes` dataset is prepared on demand by `prepare_dataset`;
on several hosts either give each its own data_dir or call it on one host and
wait at a barrier before the others read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vdt_jax.data import (
    loading,
    shapes,  # noqa: F401  (registers the `vdt_shapes` builder)
    transforms,
)

Batch = loading.Batch


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the schedule need to know about a dataset."""

    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    class_names: tuple[str, ...] = ()


# --- the dataset on disk -----------------------------------------------------


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
      FileNotFoundError: the dataset is not prepared and cannot be generated here.
      ValueError: it is prepared, but not as ArrayRecord, or lacks a split.
    """
    builder = _builder(data_config)
    if not builder.is_prepared():
        if _base_name(data_config.name) != "vdt_shapes":
            message = f"dataset {data_config.name!r} is not prepared: {builder.data_path} does not exist."
            if _base_name(data_config.name) == "imagenet2012":
                message += "\n" + _imagenet_instructions(builder)
            raise FileNotFoundError(message)
        builder.download_and_prepare(
            file_format="array_record",
            # Nothing to fetch: never look the dataset up on GCS.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    _check_prepared(builder, data_config)


def _check_prepared(builder: tfds.core.DatasetBuilder, data_config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError unless the dataset can be read by `tfds.data_source`."""
    formats = {f.value for f in builder.info.available_file_formats()}
    if "array_record" not in formats:
        raise ValueError(
            f"dataset {data_config.name!r} at {builder.data_path} is stored as {sorted(formats)}, but grain "
            "needs random access: prepare it again with download_and_prepare(file_format='array_record') "
            "into another data_dir (or after deleting that directory)"
        )
    for key in ("train_split", "eval_split"):
        split = data_config[key]
        try:
            builder.info.splits[split]
        except (KeyError, ValueError) as error:
            raise ValueError(
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


class TfdsSource(grain.sources.RandomAccessDataSource):
    """One split of a prepared TFDS dataset, records with the image still encoded.

    Records are {'image': bytes, 'label': int, 'file_name': bytes}; decoding is
    left to `transforms.DecodeExample`, which also handles grayscale and CMYK.
    The repr names only the dataset, split and length, never data_dir, so a
    checkpointed iterator state (grain compares reprs) stays valid when the
    data moves to another directory.
    """

    def __init__(self, name: str, split: str, data_dir: str | None):
        self._name, self._split = name, split
        self._source = tfds.data_source(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._source[index]

    def __repr__(self) -> str:
        return f"TfdsSource(name={self._name!r}, split={self._split!r}, num_records={len(self)})"


def _source(data_config: ml_collections.ConfigDict, split: str) -> TfdsSource:
    return TfdsSource(data_config.name, split, data_config.data_dir)



# --- training ----------------------------------------------------------------


def train_loader(
    data_config: ml_collections.ConfigDict,
    *,
    seed: int,
    per_process_batch: int,
    process_index: int,
    process_count: int,
    keep_file_name: bool = False,
) -> grain.DataLoader:
    """An infinite stream of augmented training batches for one process.

    Each process reads its own 1/process_count of the split (the remainder is
    dropped), reshuffled every epoch. An example's crop and flip depend only on
    `seed` and its position in the stream, not on the number of worker
    processes: with 0 or 1 workers the batches are identical; with W workers
    each group of W consecutive batches holds the same examples, grouped
    differently.

    `iter(loader)` gives a `grain.DataLoaderIterator`; its get_state() /
    set_state() (or grain.checkpoint.CheckpointSave / CheckpointRestore in an
    Orbax checkpoint) resume at exactly the same position. The state is only
    valid for the same dataset, split, seed, shard and num_workers.

    Args:
      keep_file_name: also pass each example's 'file_name' through (tests use it).

    Returns:
      A DataLoader yielding {'image': uint8 (B, image_size, image_size, 3),
      'label': int32 (B,)} with B = per_process_batch.
    """
    loading.check_shard(process_index, process_count)
    source = _source(data_config, data_config.train_split)
    if len(source) // process_count < per_process_batch:
        raise ValueError(
            f"{data_config.name!r} split {data_config.train_split!r} has {len(source)} examples: too few for "
            f"{process_count} process(es) x per_process_batch {per_process_batch}"
        )
    operations = [
        transforms.DecodeExample(keep_file_name=keep_file_name),
        transforms.RandomResizedCrop(data_config.image_size, scale=(_min_crop_scale(data_config), 1.0)),
        transforms.RandomHorizontalFlip(),
    ]
    return loading.train_loader(
        source,
        operations,
        seed=seed,
        per_process_batch=per_process_batch,
        num_workers=data_config.num_workers,
        prefetch_buffer=data_config.prefetch_buffer,
        process_index=process_index,
        process_count=process_count,
    )


def _min_crop_scale(data_config: ml_collections.ConfigDict) -> float:
    scale = float(data_config.min_crop_scale)
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"data.min_crop_scale must be in (0, 1], got {scale}")
    return scale


# --- evaluation --------------------------------------------------------------


def eval_batches(
    data_config: ml_collections.ConfigDict,
    *,
    per_process_batch: int,
    process_index: int,
    process_count: int,
    keep_file_name: bool = False,
) -> Iterator[Batch]:
    """One pass over the evaluation split, this process's contiguous share (`loading.sharded_eval_batches`).

    Args:
      keep_file_name: also pass 'file_name' through (padding rows get '').

    Yields:
      {'image': uint8 (B, image_size, image_size, 3), 'label': int32 (B,),
      'mask': bool (B,)}, mask False on padding (image and label zero there).
    """
    source = _source(data_config, data_config.eval_split)

    def batches_of(start: int, end: int):
        dataset = (
            grain.MapDataset.source(source)[start:end]
            .map(transforms.DecodeExample(keep_file_name=keep_file_name))
            .map(transforms.ResizeCentreCrop(data_config.image_size, data_config.eval_resize))
        )
        examples = dataset.to_iter_dataset(loading.read_options(data_config.prefetch_buffer, per_process_batch))
        if data_config.num_workers > 0:
            loading.ensure_absl_flags_parsed()
            # Batch after the workers: batching inside them would split the share
            # into one partial last batch per worker and change the batch count.
            examples = examples.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=data_config.num_workers,
                    per_worker_buffer_size=max(1, data_config.prefetch_buffer) * per_process_batch,
                )
            )
        return examples.batch(per_process_batch, drop_remainder=False)

    empty = {
        "image": np.zeros((0, data_config.image_size, data_config.image_size, 3), np.uint8),
        "label": np.zeros((0,), np.int32),
    }
    if keep_file_name:
        empty["file_name"] = np.zeros((0,), str)
    return loading.sharded_eval_batches(
        len(source),
        batches_of,
        empty=empty,
        per_process_batch=per_process_batch,
        process_index=process_index,
        process_count=process_count,
    )

"""Image datasets for pre-training: TFDS ArrayRecord datasets read with grain.

The pre-training task calls four functions:

  prepare_dataset(data_config)  makes sure the dataset exists on disk
  dataset_info(data_config)     number of classes and examples
                                (both from `vdt_jax.data.tfds_datasets`)
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
                   num_workers=0, reader threads keep `loading.READ_BUFFER`
                   records in flight).
  min_crop_scale   smallest area fraction of RandomResizedCrop (0.08 for ImageNet).
  decoder          "opencv" or "pil" (see `image_ops`).
  interpolation    "bilinear" (OpenCV, no antialiasing, as the reference) or
                   "bilinear_antialias" (Pillow, as torchvision on PIL images).

The generated `vdt_shapes` dataset is prepared on demand by `prepare_dataset`;
on several hosts either give each its own data_dir or call it on one host and
wait at a barrier before the others read.
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vdt_jax.data import loading, transforms
from vdt_jax.data.tfds_datasets import (  # noqa: F401  (the on-disk half of this module's interface)
    DatasetInfo,
    DatasetNotPreparedError,
    dataset_info,
    prepare_dataset,
)
from vdt_jax.errors import ConfigError

Batch = loading.Batch


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
        raise ConfigError(
            f"{data_config.name!r} split {data_config.train_split!r} has {len(source)} examples: too few for "
            f"{process_count} process(es) x per_process_batch {per_process_batch}"
        )
    transforms.check_choices(data_config.decoder, data_config.interpolation)
    operations = [
        transforms.DecodeExample(keep_file_name=keep_file_name, decoder=data_config.decoder),
        transforms.RandomResizedCrop(
            data_config.image_size,
            scale=(_min_crop_scale(data_config), 1.0),
            interpolation=data_config.interpolation,
        ),
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
        raise ConfigError(f"data.min_crop_scale must be in (0, 1], got {scale}")
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
    transforms.check_choices(data_config.decoder, data_config.interpolation)

    def batches_of(start: int, end: int):
        dataset = (
            grain.MapDataset.source(source)[start:end]
            .map(transforms.DecodeExample(keep_file_name=keep_file_name, decoder=data_config.decoder))
            .map(
                transforms.ResizeCentreCrop(
                    data_config.image_size, data_config.eval_resize, interpolation=data_config.interpolation
                )
            )
        )
        examples = dataset.to_iter_dataset(loading.read_options())
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

"""What both fine-tuning tasks share: volumes in, initialisation, freezing, outputs.

Both tasks run in the one training loop (`vdt_jax.train.loop.train_and_evaluate`),
with its sharding, checkpoints (train state and grain iterator together),
resume and reporting. The base class adds:

  - data: NIfTI volumes preprocessed once into a cache (`volume_cache`), random
    crops and augmentations in the shared grain loader (`vdt_jax.data.loading`),
    sharded by process; `data.train_fraction` keeps a seeded (stratified) subset;
  - initialisation: `config.init_from` (a vdt-jax run or a PyTorch /
    safetensors file, via `vdt_jax.weights.pretrained`), "auto" for the demo
    pre-training workdir when it exists; the report of what was loaded,
    adapted and newly initialised is printed and saved in the output folder;
  - `finetune.freeze`: stages ("stem", "layer1".."layer4", or "encoder") that
    get no updates; their BatchNorms run in evaluation mode (running statistics
    kept fixed), as the reference's frozen_stages do.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections

from vdt_jax import storage
from vdt_jax.atomic import write_text_atomic
from vdt_jax.data import loading
from vdt_jax.finetune import augment, contract, nifti, synthetic
from vdt_jax.finetune.volume_cache import (
    Preprocessing,
    Volume,
    VolumeCache,
    default_cache_dir,
)
from vdt_jax.models.factory import compute_dtype
from vdt_jax.train.task import Task
from vdt_jax.weights import pretrained

DEFAULT_PRETRAIN_WORKDIR = os.path.join("workdirs", "pretrain_demo")


def log(message: str) -> None:
    """Print on process 0 only, like the loop's reporter."""
    if jax.process_index() == 0:
        print(message, flush=True)


def resolve_init_from(value: str) -> str:
    """config.init_from, with "auto" meaning the demo pre-training workdir if it holds a checkpoint, else ""."""
    if value != "auto":
        return value
    checkpoints = os.path.join(DEFAULT_PRETRAIN_WORKDIR, "checkpoints")
    if os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)):
        return os.path.abspath(DEFAULT_PRETRAIN_WORKDIR)
    log(
        f"No pre-training checkpoint in ./{DEFAULT_PRETRAIN_WORKDIR} (run `python -m vdt_jax.pretrain` to make one): "
        "training from scratch."
    )
    return ""


def data_path(config: ml_collections.ConfigDict) -> str:
    """data.path when it is given (the generator is then never run); else the generated dataset data.synthetic names."""
    if config.data.path:
        return config.data.path
    return synthetic.ensure_dataset(config.data.synthetic, root=config.data.synthetic_root)


class FinetuneTask(Task):
    """The shared part of the classification and segmentation tasks."""

    def __init__(self, config: ml_collections.ConfigDict, class_names: tuple[str, ...], output_dir: str | None = None):
        super().__init__(config)
        self.class_names = tuple(class_names)
        self.output_dir = storage.absolute(output_dir) if output_dir else None
        self.init_from = resolve_init_from(config.init_from)
        self.dtype = compute_dtype(config.model.dtype)
        self.cache = VolumeCache(
            config.data.cache_dir or default_cache_dir(), Preprocessing.from_config(config.data, len(self.class_names))
        )

    # ---- data helpers ----
    def _preprocess(self, items: list[tuple[str, str | None, str]], what: str) -> list[Volume]:
        """Cache every (image, label or None, where) volume, checking it; errors name the manifest row."""
        log(f"Preparing {len(items)} {what} volume(s) (cached in {self.cache.directory})...")
        volumes = []
        for image, label, where in items:
            try:
                volumes.append(self.cache.get(image, label))
            except nifti.NiftiError as error:
                raise nifti.NiftiError(f"{where}: {error}") from None
        return volumes

    def _loader(self, source: grain.sources.RandomAccessDataSource, crop: Any, *, seed: int, per_process_batch: int):
        data = self.config.data
        loader = loading.train_loader(
            source,
            [crop],
            seed=seed,
            per_process_batch=per_process_batch,
            num_workers=data.num_workers,
            prefetch_buffer=max(data.prefetch_buffer, 1),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return iter(loader)

    def _augment(self) -> augment.Augment:
        data = self.config.data
        return augment.Augment(
            flip_axes=tuple(data.flip_axes),
            rotate_planes=tuple(tuple(plane) for plane in data.rotate_planes),
            flip_mode=data.flip_mode,
        )

    # ---- model ----
    def example_inputs(self) -> jax.Array:
        return jnp.zeros((1, *self.config.data.crop_size, self.config.data.in_channels), self.dtype)

    def prepare_inputs(self, batch, rng, train):
        return batch["image"].astype(self.dtype)

    def _backbone_prefix(self) -> tuple[str, ...]:
        return ()

    # ---- initialisation and freezing ----
    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        if not self.init_from:
            message = "Initialisation: random (no init_from); every tensor newly initialised."
            log(message)
            self.write_text("init_report.txt", message + "\n")
            return None
        variables, report = pretrained.initial_variables(
            self.init_from,
            template,
            in_channels_reduce=self.config.finetune.in_channels_reduce,
            model_config=self.config.model,
        )
        log(report.summary())
        self.write_text("init_report.txt", report.details())
        return variables

    def trainable(self, params: Any) -> Any:
        freeze = tuple(self.config.finetune.freeze)
        if not freeze:
            return None
        mask = pretrained.trainable_mask(params, freeze, self._backbone_prefix())
        log(f"Frozen stages: {', '.join(freeze)} ({sum(not t for t in jax.tree.leaves(mask))} tensors get no updates).")
        return mask

    # ---- outputs ----
    def card_fields(self) -> dict[str, Any]:
        """Architecture, classes, the preprocessing contract and the PyTorch code, for model_card.json."""
        return contract.card_fields(self.config, self.class_names, self.output_dir or "<workdir>")

    @property
    def writes_outputs(self) -> bool:
        """True on the process that writes predictions, tables and reports (process 0 with an output folder)."""
        return self.output_dir is not None and jax.process_index() == 0

    def write_text(self, name: str, text: str) -> None:
        """Write `name` (relative to the output folder) atomically, on the writing process only."""
        if self.writes_outputs:
            write_text_atomic(os.path.join(self.output_dir, name), text)

"""3D segmentation (BCV organs, LiTS liver): a UNet on a 3D ResNet encoder, whole-volume sliding-window evaluation."""

from __future__ import annotations

import os
from typing import Iterator

import ml_collections
import numpy as np
from flax import linen as nn

from vdt_jax import losses
from vdt_jax.errors import ConfigError
from vdt_jax.finetune import manifests, metrics, outputs, slab_crops, window_eval
from vdt_jax.finetune.base import FinetuneTask, data_path, log
from vdt_jax.finetune.volume_cache import SegmentationSource
from vdt_jax.models.unet3d import build_unet
from vdt_jax.weights import pretrained


class SegmentationTask(FinetuneTask):
    """Segment volumes with a UNet on a 3D ResNet encoder.

    Config fields (besides the loop's): data.path (dataset.json) or
    data.synthetic="segmentation", data.train_key / eval_key / num_val_cases,
    data.crop_size, data.crop_sampler (`slab_crops`) and its options,
    data.foreground_probability, data.samples_per_case, data.flip_axes /
    flip_mode, data.rotate_planes, data.train_fraction / fraction_seed,
    intensity and spacing fields; unet.*; eval.window / stride / weighting /
    average / resize / dice / largest_component / write_predictions /
    figure_slices; loss.*.

    Evaluation runs every validation volume through overlapping sliding windows
    (the windows of all volumes form one sharded stream of eval batches),
    stitches the window scores on the host (`window_eval`), scores Dice on
    the source file's grid, and writes each prediction as NIfTI plus a PNG.
    """

    def __init__(self, config: ml_collections.ConfigDict, output_dir: str | None = None):
        check_eval_options(config.eval)
        data = config.data
        train, self.eval_cases, names = manifests.read_decathlon(
            data_path(config),
            train_key=data.train_key,
            eval_key=data.eval_key,
            num_val_cases=data.num_val_cases,
            seed=data.val_seed,  # not fraction_seed: a sweep must keep one validation set
        )
        super().__init__(config, tuple(data.class_names) or names, output_dir)
        fraction = float(data.train_fraction)
        self.train_cases = manifests.select_fraction(train, fraction, data.fraction_seed)
        if fraction < 1.0:
            log(f"data.train_fraction={fraction}: training on {len(self.train_cases)} of {len(train)} cases.")
        self.train_volumes = self._preprocess([(c.image, c.label, c.where) for c in self.train_cases], "training")
        self.eval_volumes = self._preprocess([(c.image, c.label, c.where) for c in self.eval_cases], "evaluation")
        self.train_source = SegmentationSource(self.train_volumes, data.samples_per_case, "train")

    def build_model(self) -> nn.Module:
        config = self.config
        return build_unet(config.model, config.unet, len(self.class_names), frozen_stages=config.finetune.freeze)

    def _backbone_prefix(self) -> tuple[str, ...]:
        return (pretrained.BACKBONE_KEY,)

    @property
    def num_train_examples(self) -> int:
        return len(self.train_source)

    def train_iterator(self, *, seed: int, per_process_batch: int):
        crop = slab_crops.train_crop(self.config.data, self._augment())
        return self._loader(self.train_source, crop, seed=seed, per_process_batch=per_process_batch)

    def loss(self, outputs, batch):
        loss = self.config.loss
        return losses.dice_ce_loss(
            outputs,
            batch["label"],
            dice_weight=loss.dice_weight,
            ce_weight=loss.ce_weight,
            dice_denominator=loss.dice_denominator,
            dice_per_sample=loss.dice_per_sample,
            dice_background=loss.dice_background,
            dice_smooth=loss.dice_smooth,
        )

    # ---- sliding-window evaluation (shared with `python -m vdt_jax.predict`: `window_eval`) ----
    def _windows(self) -> window_eval.VolumeWindows:
        return window_eval.VolumeWindows.from_config(self.eval_volumes, self.config.eval, self.cache.preprocessing.channels)

    def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """The windows of every evaluation volume, this process's share, padded and masked.

        Rows carry the window's 'case' index and 'start', so `evaluate` can
        stitch the replicated outputs.
        """
        return self._windows().batches(per_process_batch)

    def eval_metrics(self, outputs, batch):
        """Per-window class scores with their case, start and mask (stitched on the host by `evaluate`).

        The scores are probabilities, or logits with eval.average="logits" (the
        reference averages logits over overlapping windows).
        """
        return window_eval.window_scores(outputs, batch, self.config.eval.average)

    def evaluate(self, state, mesh) -> dict[str, float]:
        """Dice per case (mean over cases) or pooled over cases (eval.dice), scored on each file's own grid."""
        counts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def finish(case: int, stitched: window_eval.StitchedCase) -> None:
            counts[case] = self._finish_case(case, stitched)

        self._windows().stitch(self.eval_outputs(state, mesh), finish)
        per_case_counts = [counts[i] for i in range(len(self.eval_volumes))]
        per_case = [metrics.dice_from_counts(*c) for c in per_case_counts]
        if self.config.eval.dice == "pooled":
            result = metrics.pooled_dice(per_case_counts, self.class_names)
        else:
            result = metrics.summarise_dice(per_case, self.class_names)
        if self._writes_predictions:
            images = [case.image for case in self.eval_cases]
            outputs.write_dice_table(self.output_dir, images, per_case, result, self.class_names)
        return result

    def _finish_case(self, case: int, stitched: window_eval.StitchedCase) -> tuple[np.ndarray, np.ndarray]:
        """Score one finished case on the source grid and write its prediction; returns `metrics.dice_counts`."""
        volume = self.eval_volumes[case]
        counts = metrics.dice_counts(stitched.at_source, volume.label_at_source_resolution(), len(self.class_names))
        dice = metrics.dice_from_counts(*counts)
        if self._writes_predictions:
            folder = os.path.join(self.output_dir, "predictions")
            name = outputs.case_name(self.eval_cases[case].image)
            figure_slices = self.config.eval.figure_slices
            outputs.write_case_prediction(folder, name, volume, stitched.labels, stitched.at_source, dice, self.class_names, figure_slices)
        return counts

    @property
    def _writes_predictions(self) -> bool:
        return self.writes_outputs and self.config.eval.write_predictions


EVAL_OPTIONS = {"average": window_eval.AVERAGES, "resize": window_eval.RESIZES, "dice": ("per_case", "pooled")}


def check_eval_options(eval_config: ml_collections.ConfigDict) -> None:
    """Raise a ValueError naming the field for an unknown eval.average / resize / dice value."""
    for field, allowed in EVAL_OPTIONS.items():
        if eval_config[field] not in allowed:
            raise ConfigError(f"eval.{field} must be one of {allowed}; got {eval_config[field]!r}")

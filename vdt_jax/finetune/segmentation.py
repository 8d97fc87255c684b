"""3D segmentation (BCV organs, LiTS liver): a UNet on a 3D ResNet encoder, whole-volume sliding-window evaluation."""

from __future__ import annotations

import os
from typing import Iterator

import ml_collections
import numpy as np
from flax import linen as nn

from vdt_jax import losses
from vdt_jax.finetune import augment, manifests, metrics, nifti, outputs, window_eval
from vdt_jax.finetune.base import FinetuneTask, data_path, log
from vdt_jax.finetune.volume_cache import SegmentationSource
from vdt_jax.models.unet3d import build_unet
from vdt_jax.weights import pretrained


class SegmentationTask(FinetuneTask):
    """Segment volumes with a UNet on a 3D ResNet encoder.

    Config fields (besides the loop's): data.path (dataset.json) or
    data.synthetic="segmentation", data.train_key / eval_key / num_val_cases,
    data.crop_size, data.foreground_probability, data.samples_per_case,
    data.flip_axes, data.rotate_planes, data.train_fraction / fraction_seed,
    intensity and spacing fields; eval.window / stride / weighting /
    write_predictions / figure_slices; loss.dice_weight / ce_weight.

    Evaluation runs every validation volume through overlapping sliding windows
    (the windows of all volumes form one sharded stream of eval batches),
    stitches the window probabilities on the host, scores per-class Dice on
    the source file's grid, and writes each prediction as NIfTI plus a PNG.
    """

    def __init__(self, config: ml_collections.ConfigDict, output_dir: str | None = None):
        data = config.data
        train, self.eval_cases, names = manifests.read_decathlon(
            data_path(config, "a dataset.json"),
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
        return build_unet(self.config.model, num_classes=len(self.class_names))

    def _backbone_prefix(self) -> tuple[str, ...]:
        return (pretrained.BACKBONE_KEY,)

    @property
    def num_train_examples(self) -> int:
        return len(self.train_source)

    def train_iterator(self, *, seed: int, per_process_batch: int):
        data = self.config.data
        crop = augment.RandomForegroundCrop(data.crop_size, data.foreground_probability, self._augment())
        return self._loader(self.train_source, crop, seed=seed, per_process_batch=per_process_batch)

    def loss(self, outputs, batch):
        weights = self.config.loss
        return losses.dice_ce_loss(outputs, batch["label"], dice_weight=weights.dice_weight, ce_weight=weights.ce_weight)

    # ---- sliding-window evaluation (shared with `python -m vdt_jax.predict`: `window_eval`) ----
    def _windows(self) -> window_eval.VolumeWindows:
        evaluation = self.config.eval
        channels = self.cache.preprocessing.channels
        return window_eval.VolumeWindows(self.eval_volumes, evaluation.window, evaluation.stride, evaluation.weighting, channels)

    def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """The windows of every evaluation volume, this process's share, padded and masked.

        Rows carry the window's 'case' index and 'start', so `evaluate` can
        stitch the replicated outputs.
        """
        return self._windows().batches(per_process_batch)

    def eval_metrics(self, outputs, batch):
        """Per-window class probabilities with their case, start and mask (stitched on the host by `evaluate`)."""
        return window_eval.window_probabilities(outputs, batch)

    def evaluate(self, state, mesh) -> dict[str, float]:
        dice: dict[int, np.ndarray] = {}

        def finish(case: int, stitched: window_eval.StitchedCase) -> None:
            dice[case] = self._finish_case(case, stitched.labels)

        self._windows().stitch(self.eval_outputs(state, mesh), finish)
        per_case = [dice[i] for i in range(len(self.eval_volumes))]
        result = metrics.summarise_dice(per_case, self.class_names)
        if self._writes_predictions:
            images = [case.image for case in self.eval_cases]
            outputs.write_dice_table(self.output_dir, images, per_case, result, self.class_names)
        return result

    def _finish_case(self, case: int, prediction: np.ndarray) -> np.ndarray:
        """Score one case's (D, H, W) uint8 model-space labels at the source resolution and write them; returns per-class Dice."""
        volume = self.eval_volumes[case]
        at_source = nifti.resize(prediction, volume.geometry.canonical_shape, order=0)
        dice = metrics.dice_per_class(at_source, volume.label_at_source_resolution(), len(self.class_names))
        if self._writes_predictions:
            folder = os.path.join(self.output_dir, "predictions")
            name = outputs.case_name(self.eval_cases[case].image)
            figure_slices = self.config.eval.figure_slices
            outputs.write_case_prediction(folder, name, volume, prediction, at_source, dice, self.class_names, figure_slices)
        return dice

    @property
    def _writes_predictions(self) -> bool:
        return self.writes_outputs and self.config.eval.write_predictions

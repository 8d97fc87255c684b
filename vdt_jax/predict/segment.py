"""Segment new volumes with a fine-tuned UNet, through the same sliding-window path as training's evaluation.

Per case (`<name>` = the file name without .nii/.nii.gz), in `--out`:
  <name>.nii.gz                uint8 labels on the source file's grid, axes, affine and qform/sform
  <name>_probabilities.nii.gz  (--probabilities) 4D uint8 class probabilities x 255 (scl_slope 1/255),
                               same grid, resampled like the labels
  <name>.png                   (--png) axial slices: the image and the prediction overlay
Each file appears atomically; a case whose files all exist is skipped when the
command runs again (`--overwrite` redoes it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from vdt_jax.finetune import figures, nifti, outputs, window_eval
from vdt_jax.predict.inputs import InputError, InputItem, InputVolume
from vdt_jax.predict.loaded_run import LoadedRun
from vdt_jax.predict.model_step import PredictionStep


@dataclasses.dataclass(frozen=True)
class Request:
    """What to write, where."""

    out_dir: str
    probabilities: bool = False
    png: bool = False
    overwrite: bool = False

    def paths(self, name: str) -> list[str]:
        names = [name + ".nii.gz"] + [name + "_probabilities.nii.gz"] * self.probabilities + [name + ".png"] * self.png
        return [os.path.join(self.out_dir, n) for n in names]

    def complete(self, name: str) -> bool:
        return not self.overwrite and all(os.path.exists(p) for p in self.paths(name))


def segment(run: LoadedRun, volumes: list[InputVolume], names: list[str], step: PredictionStep, request: Request,
            log: Callable[[str], None] = print) -> None:
    """Predict every volume and write its outputs as its stitching completes.

    Args:
      run: the loaded segmentation run.
      volumes, names: the inputs (headers checked, voxels not read yet) and their unique output names.
      step: the eval step (its batch size and TTA).
      request: output folder and options.
      log: where progress lines go.
    """
    preprocessing, evaluation = run.preprocessing, run.config.eval
    windows = window_eval.VolumeWindows.from_config(volumes, evaluation, preprocessing.channels)  # the run's own eval options

    def finish(case: int, stitched: window_eval.StitchedCase) -> None:
        volume, name = volumes[case], names[case]
        _write_case(volume, name, stitched, run, request)
        volume.release()
        model_shape = "x".join(map(str, volume.geometry.model_shape))
        log(
            f"{name} ({case + 1}/{len(volumes)}): {'x'.join(map(str, volume.geometry.shape))} {volume.geometry.axcodes} -> "
            f"model {model_shape}, {len(windows.plans[case].starts)} windows, "
            f"{time.perf_counter() - volume.started:.1f} s -> {request.paths(name)[0]}"
        )

    log(f"Compiled the network for {step.per_process_batch} windows per step in {step.compile(windows.empty_batch()):.1f} s.")
    windows.stitch(step.outputs(windows.batches(step.per_process_batch)), finish, keep_probabilities=request.probabilities)


def _write_case(volume: InputVolume, name: str, stitched: window_eval.StitchedCase, run: LoadedRun, request: Request) -> None:
    """The case's files: probabilities and figure first, the label file last (its presence marks the case done)."""
    label_path, *others = request.paths(name)
    if request.probabilities:
        nifti.save_probabilities(others.pop(0), stitched.probabilities, volume.geometry, window_eval.PROBABILITY_LEVELS)
    if request.png:
        figures.segmentation_overlay(
            others.pop(0), volume.image()[..., 0], None, stitched.labels, run.class_names,
            num_slices=run.config.eval.figure_slices, title=f"{name}: prediction (step {run.step})",
        )
    nifti.save_label(label_path, stitched.at_source, volume.geometry)


def output_names(items: list[InputItem]) -> list[str]:
    """Each input's output name (its file name without extension); refuses two inputs with one name."""
    names = [outputs.case_name(item.image) for item in items]
    seen: dict[str, str] = {}
    for item, name in zip(items, names):
        if name in seen and seen[name] != item.image:
            raise InputError(f"{item.where}: {item.image} and {seen[name]} would both be written as {name}.nii.gz; rename one")
        seen[name] = item.image
    return names

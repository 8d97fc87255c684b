"""Sliding-window segmentation of whole volumes: one window stream, one stitch loop, one eval-step output.

Training's evaluation (`vdt_jax.finetune.segmentation`) and
`python -m vdt_jax.predict` both go through `VolumeWindows`: the windows of
every volume, in order, form one stream of fixed-size batches (sharded over
processes, padded and masked by `vdt_jax.data.loading`); the jitted eval step
returns each window's class scores (`window_scores`: probabilities, or logits
with eval.average="logits"); `stitch` averages them per volume
(`sliding_window.Stitcher`, float32, slab by slab), turns each finished slab
into labels at once and brings them to the source file's grid: nearest
resampling of the labels (eval.resize="labels") or the scores resized, then
argmaxed, slab by slab (eval.resize="scores", `resample.SlabResizedArgmax`),
then optionally keeps each class's largest component (eval.largest_component).
With the same weights, config, batch size and devices, both paths therefore
give the same labels bit for bit.

Memory: one volume is read at a time (the next one opens when its first
window is needed), the stitcher holds about window + stride depth slices of
float32 scores (plus, for eval.resize="scores", those slices resized along
H), and a finished case is a uint8 label map in model space and one on the
source grid (plus, only when asked for, uint8-quantised probabilities).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import jax
import ml_collections
import numpy as np

from vdt_jax.data import loading
from vdt_jax.finetune import metrics, nifti, resample, sliding_window

PROBABILITY_LEVELS = 255  # probabilities are kept as uint8 round(p * 255)


class WindowedVolume(Protocol):
    """What the window stream needs of a volume (a cached `Volume`, or a volume `predict` loads)."""

    geometry: nifti.Geometry

    @property
    def pad_value(self) -> float: ...

    def image(self) -> np.ndarray: ...


@dataclasses.dataclass
class StitchedCase:
    """A finished volume: labels in model space and on the source grid, and optionally its quantised class probabilities.

    Attributes:
      labels: (D, H, W) uint8 argmax of the stitched scores (model space).
      at_source: (D, H, W) uint8 labels on the file's canonical grid (`Geometry.canonical_shape`).
      probabilities: (D, H, W, K) uint8, round(p * 255), model space, or None.
    """

    labels: np.ndarray
    at_source: np.ndarray | None = None
    probabilities: np.ndarray | None = None


AVERAGES = ("probabilities", "logits")  # eval.average
RESIZES = ("labels", "scores")  # eval.resize


def class_scores(outputs, average: str):
    """What overlapping windows average: softmax probabilities, or the logits themselves (eval.average)."""
    return outputs if average == "logits" else jax.nn.softmax(outputs)


def window_scores(outputs, batch, average: str = "probabilities"):
    """The eval-step output of sliding-window segmentation: per-window class scores, with its case, start and mask."""
    return {"scores": class_scores(outputs, average), "case": batch["case"], "start": batch["start"], "mask": batch["mask"]}


class VolumeWindows:
    """The windows of a list of volumes as one batched stream, and the stitching of their outputs.

    Args:
      volumes: the volumes, in order.
      window, stride: sliding-window size and step (D, H, W), model-space voxels.
      weighting: "gaussian" or "constant".
      channels: input channels (for fully padded batches).
      average: "probabilities" or "logits": what the scores fed to `stitch` are.
      resize: "labels" (nearest) or "scores" (trilinear, then argmax): how labels reach the source grid.
      largest_component: keep only each foreground class's largest connected component.
    """

    def __init__(self, volumes: Sequence[WindowedVolume], window, stride, weighting: str, channels: int, *,
                 average: str = "probabilities", resize: str = "labels", largest_component: bool = False):
        self.volumes = list(volumes)
        self.plans = [sliding_window.plan(v.geometry.model_shape, tuple(window), tuple(stride)) for v in self.volumes]
        self.weighting = weighting
        self.channels = channels
        self.average, self.resize, self.largest_component = average, resize, bool(largest_component)

    @classmethod
    def from_config(cls, volumes: Sequence[WindowedVolume], evaluation: ml_collections.ConfigDict, channels: int) -> "VolumeWindows":
        """Windows and post-processing as a run's `eval` config section sets them (training and predict alike)."""
        return cls(volumes, evaluation.window, evaluation.stride, evaluation.weighting, channels, average=evaluation.average,
                   resize=evaluation.resize, largest_component=evaluation.largest_component)

    @property
    def num_windows(self) -> int:
        return sum(len(p.starts) for p in self.plans)

    def batches(self, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of every volume's windows, in `per_process_batch` rows with 'case', 'start', 'mask'."""
        windows = [(case, start) for case, plan in enumerate(self.plans) for start in plan.starts]
        opened: dict[int, np.ndarray] = {}

        def window(case: int, start: tuple[int, int, int]) -> np.ndarray:
            if case not in opened:  # keep one volume open at a time
                opened.clear()
                opened[case] = self.volumes[case].image()
            return self.plans[case].window_of(opened[case], start, self.volumes[case].pad_value)

        def batches_of(first: int, end: int):
            for i in range(first, end, per_process_batch):
                rows = windows[i : min(i + per_process_batch, end)]
                yield {
                    "image": np.stack([window(case, start) for case, start in rows]),
                    "case": np.asarray([case for case, _ in rows], np.int32),
                    "start": np.asarray([start for _, start in rows], np.int32).reshape(-1, 3),
                }

        return loading.sharded_eval_batches(
            len(windows),
            batches_of,
            empty=self.empty_batch(),
            per_process_batch=per_process_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def empty_batch(self) -> dict[str, np.ndarray]:
        """A batch with every key and no rows (what padded batches are made of)."""
        return {
            "image": np.zeros((0, *self.plans[0].window, self.channels), np.float32),
            "case": np.zeros((0,), np.int32),
            "start": np.zeros((0, 3), np.int32),
        }

    def stitch(
        self,
        outputs: Iterable[dict[str, np.ndarray]],
        finish: Callable[[int, StitchedCase], None],
        *,
        keep_probabilities: bool = False,
    ) -> None:
        """Stitch the eval-step outputs of `batches` and call `finish(case, stitched)` as each volume completes.

        Args:
          outputs: `window_scores` of every batch, on the host (every process sees all rows).
          finish: called once per volume, in the order volumes complete.
          keep_probabilities: also return quantised probabilities (memory: one byte per voxel and class).
        """
        open_cases: dict[int, _OpenCase] = {}
        for out in outputs:
            rows = loading.unpadded(out)
            for scores, case, start in zip(rows["scores"], rows["case"], rows["start"]):
                case = int(case)
                if case not in open_cases:
                    open_cases[case] = self._open_case(case, scores.shape[-1], keep_probabilities)
                opened = open_cases[case]
                opened.stitcher.add(start, scores)
                opened.store_finished(self.average == "logits")
                if opened.stitcher.complete:
                    del open_cases[case]
                    finish(case, self._finished(case, opened))
        if open_cases:
            raise RuntimeError(f"the window stream ended before cases {sorted(open_cases)} were complete")

    def _open_case(self, case: int, num_classes: int, keep_probabilities: bool) -> "_OpenCase":
        shape, source_shape = self.plans[case].shape, self.volumes[case].geometry.canonical_shape
        probabilities = np.zeros((*shape, num_classes), np.uint8) if keep_probabilities else None
        resizer = resample.SlabResizedArgmax(shape, source_shape) if self.resize == "scores" else None
        stitched = StitchedCase(np.zeros(shape, np.uint8), probabilities=probabilities)
        return _OpenCase(sliding_window.Stitcher(self.plans[case], self.weighting), stitched, resizer)

    def _finished(self, case: int, opened: "_OpenCase") -> StitchedCase:
        """The complete case with its labels on the source grid (and largest components only, if asked)."""
        stitched = opened.stitched
        if opened.resizer is not None:
            stitched.at_source = opened.resizer.labels
        else:
            stitched.at_source = nifti.resize(stitched.labels, self.volumes[case].geometry.canonical_shape, order=0)
        if self.largest_component:
            stitched.labels = metrics.keep_largest_component(stitched.labels)
            stitched.at_source = metrics.keep_largest_component(stitched.at_source)
        return stitched


@dataclasses.dataclass
class _OpenCase:
    """A volume being stitched: its stitcher, its labels so far and, for eval.resize="scores", its resizer."""

    stitcher: sliding_window.Stitcher
    stitched: StitchedCase
    resizer: resample.SlabResizedArgmax | None

    def store_finished(self, logits: bool) -> None:
        """Move the stitcher's finished slices into the case's label maps (and probabilities)."""
        finished = self.stitcher.take_finished()
        if finished is None:
            return
        first, scores = finished
        depths = np.s_[first : first + len(scores)]
        self.stitched.labels[depths] = scores.argmax(-1).astype(np.uint8)
        if self.resizer is not None:
            self.resizer.add(first, scores)
        if self.stitched.probabilities is not None:
            probs = _softmax(scores) if logits else np.clip(scores, 0, 1)
            self.stitched.probabilities[depths] = np.rint(probs * PROBABILITY_LEVELS).astype(np.uint8)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)

"""Sliding-window segmentation of whole volumes: one window stream, one stitch loop, one eval-step output.

Training's evaluation (`vdt_jax.finetune.segmentation`) and
`python -m vdt_jax.predict` both go through `VolumeWindows`: the windows of
every volume, in order, form one stream of fixed-size batches (sharded over
processes, padded and masked by `vdt_jax.data.loading`); the jitted eval step
returns each window's class probabilities (`window_probabilities`); `stitch`
averages them per volume (`sliding_window.Stitcher`, float32, slab by slab) and
turns each finished slab into labels at once. With the same weights, batch size
and devices, both paths therefore give the same labels bit for bit.

Memory: one volume is read at a time (the next one opens when its first
window is needed), the stitcher holds about window + stride depth slices of
float32 probabilities, and a finished case is a uint8 label map (plus, only
when asked for, uint8-quantised probabilities).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import jax
import numpy as np

from vdt_jax.data import loading
from vdt_jax.finetune import nifti, sliding_window

PROBABILITY_LEVELS = 255  # probabilities are kept as uint8 round(p * 255)


class WindowedVolume(Protocol):
    """What the window stream needs of a volume (a cached `Volume`, or a volume `predict` loads)."""

    geometry: nifti.Geometry

    @property
    def pad_value(self) -> float: ...

    def image(self) -> np.ndarray: ...


@dataclasses.dataclass
class StitchedCase:
    """A finished volume: labels in model space, and optionally its quantised class probabilities.

    Attributes:
      labels: (D, H, W) uint8 argmax of the stitched probabilities.
      probabilities: (D, H, W, K) uint8, round(p * 255), or None.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None


def window_probabilities(outputs, batch):
    """The eval-step output of sliding-window segmentation: per-window softmax, with its case, start and mask."""
    return {"probs": jax.nn.softmax(outputs), "case": batch["case"], "start": batch["start"], "mask": batch["mask"]}


class VolumeWindows:
    """The windows of a list of volumes as one batched stream, and the stitching of their outputs.

    Args:
      volumes: the volumes, in order.
      window, stride: sliding-window size and step (D, H, W), model-space voxels.
      weighting: "gaussian" or "constant".
      channels: input channels (for fully padded batches).
    """

    def __init__(self, volumes: Sequence[WindowedVolume], window, stride, weighting: str, channels: int):
        self.volumes = list(volumes)
        self.plans = [sliding_window.plan(v.geometry.model_shape, tuple(window), tuple(stride)) for v in self.volumes]
        self.weighting = weighting
        self.channels = channels

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
          outputs: `window_probabilities` of every batch, on the host (every process sees all rows).
          finish: called once per volume, in the order volumes complete.
          keep_probabilities: also return quantised probabilities (memory: one byte per voxel and class).
        """
        open_cases: dict[int, tuple[sliding_window.Stitcher, StitchedCase]] = {}
        for out in outputs:
            rows = loading.unpadded(out)
            for probs, case, start in zip(rows["probs"], rows["case"], rows["start"]):
                case = int(case)
                if case not in open_cases:
                    open_cases[case] = (sliding_window.Stitcher(self.plans[case], self.weighting), self._empty_case(case, probs.shape[-1], keep_probabilities))
                stitcher, stitched = open_cases[case]
                stitcher.add(start, probs)
                _store_finished(stitcher, stitched)
                if stitcher.complete:
                    del open_cases[case]
                    finish(case, stitched)
        if open_cases:
            raise RuntimeError(f"the window stream ended before cases {sorted(open_cases)} were complete")

    def _empty_case(self, case: int, num_classes: int, keep_probabilities: bool) -> StitchedCase:
        shape = self.plans[case].shape
        probabilities = np.zeros((*shape, num_classes), np.uint8) if keep_probabilities else None
        return StitchedCase(np.zeros(shape, np.uint8), probabilities)


def _store_finished(stitcher: sliding_window.Stitcher, stitched: StitchedCase) -> None:
    """Move the stitcher's finished slices into the case's label map (and probabilities)."""
    finished = stitcher.take_finished()
    if finished is None:
        return
    first, probs = finished
    depths = np.s_[first : first + len(probs)]
    stitched.labels[depths] = probs.argmax(-1).astype(np.uint8)
    if stitched.probabilities is not None:
        stitched.probabilities[depths] = np.rint(np.clip(probs, 0, 1) * PROBABILITY_LEVELS).astype(np.uint8)

"""Whole-volume inference with overlapping sliding windows.

The volume is covered by windows of a fixed size placed every `stride` voxels
along each axis, the last window of an axis flush with the volume's end (so no
voxel is missed and no window leaves the volume); a volume smaller than the
window is padded around. Windows go to the model in fixed-size batches (the
last one padded, so one compiled program serves every batch), and a `Stitcher`
averages the outputs where windows overlap, weighted uniformly ("constant") or
by a Gaussian centred on each window ("gaussian", as nnU-Net does: window
borders, which see less context, count less).

Memory: the `Stitcher` accumulates in float32 and holds only the depth slices
that a window still to come covers (about window + stride slices when windows
arrive in raster order); finished slabs are handed out as soon as they are
complete, so a 512x512x300 CT with 14 classes never needs one full-volume
array per class. Where windows do not overlap the output is reproduced bit for
bit; where they overlap, the weighted float32 sums round (a relative error of
a few 1e-7, which the tests bound), unlike the float64 accumulation this
replaced, which needed 8 bytes per voxel and class for the whole volume.

`sliding_window_inference` runs the whole thing with any `predict` function;
training's evaluation and `python -m vdt_jax.predict` feed the same windows
through the sharded eval step (`vdt_jax.finetune.window_eval`).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Callable, Sequence

import numpy as np

from vdt_jax.errors import ConfigError
from vdt_jax.finetune.augment import crop

WEIGHTINGS = ("constant", "gaussian")
Triple = tuple[int, int, int]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis: every `stride`, plus one flush with the end."""
    if stride <= 0:
        raise ConfigError(f"sliding-window stride must be positive, got {stride}")
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_weights(window: Sequence[int], weighting: str) -> np.ndarray:
    """(wd, wh, ww, 1) float32 importance of each voxel of a window."""
    if weighting == "constant":
        return np.ones((*window, 1), np.float32)
    if weighting != "gaussian":
        raise ConfigError(f"unknown sliding-window weighting {weighting!r}; expected one of {WEIGHTINGS}")
    weights = np.ones(())
    for n in window:
        position = np.arange(n) - (n - 1) / 2
        weights = np.multiply.outer(weights, np.exp(-0.5 * (position / max(n / 8, 1e-3)) ** 2))
    weights = weights / weights.max()
    return np.maximum(weights, 1e-3)[..., None].astype(np.float32)  # never zero: every voxel gets a defined average


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one volume go.

    Attributes:
      shape: (D, H, W) of the volume.
      window: window size.
      offset: where the volume sits in the grid padded up to at least `window`.
      starts: each window's start in the padded grid, in raster order.
    """

    shape: Triple
    window: Triple
    offset: Triple
    starts: tuple[Triple, ...]

    @property
    def padded(self) -> Triple:
        return tuple(max(s, w) for s, w in zip(self.shape, self.window))  # type: ignore[return-value]

    def window_of(self, volume: np.ndarray, start: Sequence[int], pad_value: float) -> np.ndarray:
        """The (window..., C) float32 input at a start of `starts`."""
        return crop(volume, np.asarray(start) - np.asarray(self.offset), self.window, pad_value).astype(np.float32)


def plan(shape: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> WindowPlan:
    shape = tuple(int(s) for s in shape[:3])
    window = tuple(int(w) for w in window)
    if len(window) != 3 or len(stride) != 3:
        raise ConfigError(f"sliding window and stride need 3 values (D, H, W); got {window}, {tuple(stride)}")
    padded = tuple(max(s, w) for s, w in zip(shape, window))
    offset = tuple((p - s) // 2 for p, s in zip(padded, shape))
    starts = tuple(itertools.product(*(window_starts(n, w, int(s)) for n, w, s in zip(padded, window, stride))))
    return WindowPlan(shape, window, offset, starts)  # type: ignore[arg-type]


class Stitcher:
    """Weighted average of overlapping window outputs over one volume, in float32, finished slab by slab.

    Accumulators exist only for the depth slices (of the padded grid) that an
    added window touched and that are not finished yet. A slice is finished
    once every window of every depth row covering it has been added;
    `take_finished` hands out the finished slices in order, averaged, with the
    padding cut away, and frees them.
    """

    def __init__(self, plan: WindowPlan, weighting: str = "gaussian"):
        self.plan = plan
        self.weights = window_weights(plan.window, weighting)
        self._remaining = collections.Counter(start[0] for start in plan.starts)  # windows still due per depth row
        self._slices: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # padded depth -> (sum, weight sum)
        self._next = 0  # first padded depth slice not handed out yet
        self.added = 0

    def add(self, start: Sequence[int], output: np.ndarray) -> None:
        """Accumulate one window's (window..., K) output at `start` (one of `plan.starts`)."""
        d, h, w = (int(s) for s in start)
        if self._remaining[d] <= 0 or d < self._next:
            raise ValueError(f"window start {tuple(start)} is not a pending window of this plan")
        rows, cols = np.s_[h : h + self.plan.window[1]], np.s_[w : w + self.plan.window[2]]
        output = np.asarray(output, np.float32)
        for dz in range(self.plan.window[0]):
            total, weight_sum = self._slice(d + dz, output.shape[-1])
            total[rows, cols] += output[dz] * self.weights[dz]
            weight_sum[rows, cols] += self.weights[dz]
        self._remaining[d] -= 1
        self.added += 1

    def _slice(self, depth: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
        if depth not in self._slices:
            _, height, width = self.plan.padded
            self._slices[depth] = (np.zeros((height, width, channels), np.float32), np.zeros((height, width, 1), np.float32))
        return self._slices[depth]

    @property
    def complete(self) -> bool:
        return self.added == len(self.plan.starts)

    def take_finished(self) -> tuple[int, np.ndarray] | None:
        """(first depth index in the volume, (n, H, W, K) float32 averages) of the newly finished slices, or None."""
        pending = [d for d, count in self._remaining.items() if count > 0]
        limit = min(pending) if pending else self.plan.padded[0]
        (d0, h0, w0), (sd, sh, sw) = self.plan.offset, self.plan.shape
        first, last = max(self._next, d0), min(limit, d0 + sd)  # padding slices are dropped, never returned
        averaged = []
        for depth in range(self._next, limit):
            total, weight_sum = self._slices.pop(depth)
            if first <= depth < last:
                averaged.append((total / weight_sum)[h0 : h0 + sh, w0 : w0 + sw])
        self._next = max(self._next, limit)
        return (first - d0, np.stack(averaged)) if averaged else None

    @property
    def held_slices(self) -> int:
        """Depth slices currently accumulated (what the stitcher's memory scales with)."""
        return len(self._slices)

    def result(self) -> np.ndarray:
        """(D, H, W, K) float32 averages of the whole volume (for small volumes; nothing may have been taken)."""
        if not self.complete:
            raise RuntimeError(f"stitching needs {len(self.plan.starts)} windows, got {self.added}")
        if self._next:
            raise RuntimeError("result() needs every slice; some were already handed out by take_finished()")
        return self.take_finished()[1]


def sliding_window_inference(
    predict: Callable[[np.ndarray], np.ndarray],
    volume: np.ndarray,
    *,
    window: Sequence[int],
    stride: Sequence[int],
    batch_size: int,
    weighting: str = "gaussian",
    pad_value: float = 0.0,
) -> np.ndarray:
    """Model outputs for a whole volume, stitched from overlapping windows.

    Args:
      predict: (batch_size, *window, C) float32 -> (batch_size, *window, K)
        per-voxel outputs (e.g. class probabilities), as numpy.
      volume: (D, H, W, C) model-space volume (may be memory-mapped).
      window: (wd, wh, ww) window size.
      stride: step between windows per axis (window - stride voxels overlap).
      batch_size: windows per `predict` call; short batches are zero-padded.
      weighting: "constant" or "gaussian" averaging of overlapping outputs.
      pad_value: value that pads a volume smaller than the window.

    Returns:
      (D, H, W, K) float32 outputs.
    """
    layout = plan(volume.shape, window, stride)
    stitcher = Stitcher(layout, weighting)
    for i in range(0, len(layout.starts), batch_size):
        chunk = layout.starts[i : i + batch_size]
        windows = np.zeros((batch_size, *layout.window, volume.shape[3]), np.float32)
        for j, start in enumerate(chunk):
            windows[j] = layout.window_of(volume, start, pad_value)
        for start, output in zip(chunk, np.asarray(predict(windows))):
            stitcher.add(start, output)
    return stitcher.result()

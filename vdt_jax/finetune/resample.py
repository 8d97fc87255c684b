"""Separable resampling on the host: taps along one axis, and class scores resized to a grid then argmaxed.

Positions follow the half-pixel convention of OpenCV's INTER_LINEAR, PyTorch's
`align_corners=False` and scipy's `zoom(grid_mode=True)`: output index j of an
axis resized from n_in to n_out samples input position (j + 0.5) * n_in / n_out - 0.5,
clamped to the edges. Nearest taps follow OpenCV's INTER_NEAREST:
floor(j * n_in / n_out). Working one axis at a time on an index range lets a
caller read only the voxels an output region needs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_CHUNK_VALUES = 1 << 24  # floats held at once by `resized_argmax` (64 MB of float32)


def linear_taps(n_in: int, n_out: int, start: int = 0, count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left index, right index, right weight) of outputs start .. start + count of an n_in -> n_out resize."""
    count = n_out - start if count is None else count
    x = (np.arange(start, start + count) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, n_in - 1)
    left = np.floor(x).astype(np.int64)
    return left, np.minimum(left + 1, n_in - 1), (x - left).astype(np.float32)


def nearest_taps(n_in: int, n_out: int, start: int = 0, count: int | None = None) -> np.ndarray:
    """Input index of outputs start .. start + count of a nearest-neighbour n_in -> n_out resize."""
    count = n_out - start if count is None else count
    return np.minimum(np.floor(np.arange(start, start + count) * (n_in / n_out)).astype(np.int64), n_in - 1)


def interpolate_axis(array: np.ndarray, axis: int, taps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """`array` resampled along `axis` with `linear_taps` (indices relative to `array`)."""
    left, right, weight = taps
    shape = [1] * array.ndim
    shape[axis] = len(weight)
    weight = weight.reshape(shape)
    return np.take(array, left, axis) * (1 - weight) + np.take(array, right, axis) * weight


def resized_argmax(scores: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """argmax over classes of (D, H, W, K) `scores` resized (trilinear) to `shape`, as uint8 labels.

    What the reference's segmentor does before scoring (logits resized to the
    loaded volume's shape, then argmax). Computed in slabs of output rows so a
    whole-volume float copy at the source resolution is never held.
    """
    shape = tuple(int(s) for s in shape)
    depth_taps = linear_taps(scores.shape[0], shape[0])
    width_taps = linear_taps(scores.shape[2], shape[2])
    rows = max(1, MAX_CHUNK_VALUES // max(shape[0] * shape[2] * scores.shape[3], 1))
    out = np.empty(shape, np.uint8)
    for first in range(0, shape[1], rows):
        left, right, weight = linear_taps(scores.shape[1], shape[1], first, min(rows, shape[1] - first))
        lo, hi = int(left.min()), int(right.max()) + 1
        block = interpolate_axis(np.asarray(scores[:, lo:hi], np.float32), 1, (left - lo, right - lo, weight))
        block = interpolate_axis(interpolate_axis(block, 0, depth_taps), 2, width_taps)
        out[:, first : first + block.shape[1]] = block.argmax(-1)
    return out


class SlabResizedArgmax:
    """`resized_argmax` fed depth slab by depth slab, as the sliding-window stitcher finishes them.

    Holds only the slabs' rows resized along H (plus the one slice a depth tap
    may reach back to) and the uint8 labels: each output voxel is computed by
    the same operations in the same order as `resized_argmax`, so the labels
    are identical to it, without a whole-volume float array.

    Args:
      in_shape: (D, H, W) of the scores fed.
      out_shape: (D, H, W) of the labels.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        self.in_shape, self.out_shape = tuple(int(s) for s in in_shape), tuple(int(s) for s in out_shape)
        self.depth_taps = linear_taps(self.in_shape[0], self.out_shape[0])
        self.height_taps = linear_taps(self.in_shape[1], self.out_shape[1])
        self.width_taps = linear_taps(self.in_shape[2], self.out_shape[2])
        self.labels = np.empty(self.out_shape, np.uint8)
        self._held: list[np.ndarray] = []  # H-resized input slices from depth self._base on
        self._base = 0
        self._fed = 0  # input depths fed so far
        self._next = 0  # first output depth not computed yet

    def add(self, first: int, slab: np.ndarray) -> None:
        """Feed input depths first .. first + len(slab) ((n, H, W, K) scores, in order, no gaps)."""
        if first != self._fed:
            raise ValueError(f"slabs must arrive in depth order: expected depth {self._fed}, got {first}")
        self._fed += len(slab)
        if self.complete:
            return
        wanted = np.asarray(slab[max(self._base - first, 0) :], np.float32)  # slices no output reads are dropped
        self._held.extend(interpolate_axis(wanted, 1, self.height_taps))
        available = self._fed
        left, right, weight = self.depth_taps
        end = self._next
        while end < self.out_shape[0] and right[end] < available:
            end += 1
        if end == self._next:
            return
        block = np.stack(self._held[int(left[self._next]) - self._base : int(right[end - 1]) + 1 - self._base])
        offset = int(left[self._next])
        taps = (left[self._next : end] - offset, right[self._next : end] - offset, weight[self._next : end])
        self.labels[self._next : end] = interpolate_axis(interpolate_axis(block, 0, taps), 2, self.width_taps).argmax(-1)
        self._next = end
        keep_from = int(left[end]) if end < self.out_shape[0] else available
        del self._held[: keep_from - self._base]
        self._base = max(keep_from, self._base)

    @property
    def complete(self) -> bool:
        return self._next == self.out_shape[0]

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

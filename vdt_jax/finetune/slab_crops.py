"""Segmentation training crops drawn as the reference's BCV and LiTS pipelines draw them.

The reference (an mmsegmentation fork) crops in two steps: a slab of
`crop_size[0]` slices in depth, then per slice a random in-plane rescale
(mmseg `Resize` with `img_scale` and `ratio_range`, aspect ratio kept) and a
uniform in-plane crop (`RandomCrop`), padded at the far edges when the
rescaled slices are smaller than the crop. `data.crop_sampler` picks the depth step:

  "random_z_crop" (BCV, mmseg `RandomZCrop`): the slab starts uniformly at a
      slice from which it ends inside the range of slices holding any label
      > 0; then, while one class fills at least `max_class_ratio` of the
      slab's voxels or only one class is present, up to 10 re-draws uniform
      over the whole depth; the last draw is kept.
  "key_slice" (LiTS, slice lists read around a random key slice): the key
      slice is uniform over the labelled range with probability
      `foreground_probability`, else over the whole depth; the slab is
      key - (n - 1) // 2 .. key + n // 2, the first or last slice repeated
      beyond the volume.

The rescale factor is `rescale_size` * r / (longer in-plane side), r uniform
in `rescale_ratio` (mmcv's keep-ratio rule for a square target). Only the
voxels the crop needs are read and resampled (`vdt_jax.finetune.resample`:
bilinear for images, nearest for labels, as OpenCV does for mmcv).
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

from vdt_jax.errors import ConfigError
from vdt_jax.finetune import augment
from vdt_jax.finetune.resample import interpolate_axis, linear_taps, nearest_taps

SAMPLERS = ("foreground", "random_z_crop", "key_slice")
MAX_REDRAWS = 10


def labelled_range(label: np.ndarray) -> tuple[int, int] | None:
    """(first, last) depth index of the slices holding any label > 0, or None."""
    labelled = np.flatnonzero(np.asarray(label).reshape(label.shape[0], -1).max(axis=1) > 0)
    return (int(labelled[0]), int(labelled[-1])) if len(labelled) else None


def random_z_start(
    label: np.ndarray, depth: int, rng: np.random.Generator, labelled: tuple[int, int] | None, max_class_ratio: float
) -> int:
    """Start of a `depth`-slice slab drawn as mmseg's RandomZCrop (see the module docstring)."""
    whole = max(label.shape[0] - depth, 0)
    if labelled is None:
        start = int(rng.integers(0, whole + 1))
    else:  # the reference fails when the labelled range is too short to fit a slab; start at its first slice then
        start = int(rng.integers(labelled[0], max(labelled[1] - depth + 1, labelled[0] + 1)))
    if max_class_ratio >= 1.0:
        return start
    for _ in range(MAX_REDRAWS):
        counts = np.bincount(np.asarray(label[start : start + depth]).ravel())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < max_class_ratio:
            break
        start = int(rng.integers(0, whole + 1))
    return start


def rescaled_shape(shape: Sequence[int], size: int, ratio: float) -> tuple[int, int]:
    """In-plane (H, W) after mmcv's keep-ratio rescale to a square target of int(size * ratio)."""
    factor = int(size * ratio) / max(shape)
    return int(shape[0] * factor + 0.5), int(shape[1] * factor + 0.5)


def rescaled_crop(
    array: np.ndarray,
    depth_index: np.ndarray,
    scaled: Sequence[int],
    offset: Sequence[int],
    crop: Sequence[int],
    *,
    linear: bool,
    pad_value: float,
) -> np.ndarray:
    """Slices `depth_index` of `array` (D, H, W, ...) rescaled in-plane to `scaled`, cropped at `offset`, padded to `crop`.

    Reads only the rows and columns the crop needs; `linear` chooses bilinear
    (images) or nearest (label maps) sampling.
    """
    source = array.shape[1:3]
    count = [min(c, s - o) for c, s, o in zip(crop, scaled, offset)]
    if linear:
        taps = [linear_taps(n, s, o, c) for n, s, o, c in zip(source, scaled, offset, count)]
        spans = [(int(t[0].min()), int(t[1].max()) + 1) for t in taps]
    else:
        taps = [nearest_taps(n, s, o, c) for n, s, o, c in zip(source, scaled, offset, count)]
        spans = [(int(t.min()), int(t.max()) + 1) for t in taps]
    d_lo = int(depth_index.min())
    (h_lo, h_hi), (w_lo, w_hi) = spans
    block = np.asarray(array[d_lo : int(depth_index.max()) + 1, h_lo:h_hi, w_lo:w_hi])[depth_index - d_lo]
    for axis, tap, lo in zip((1, 2), taps, (h_lo, w_lo)):
        if linear:
            block = interpolate_axis(block.astype(np.float32), axis, (tap[0] - lo, tap[1] - lo, tap[2]))
        else:
            block = np.take(block, tap - lo, axis)
    pad = [(0, 0), (0, crop[0] - count[0]), (0, crop[1] - count[1])] + [(0, 0)] * (array.ndim - 3)
    return np.pad(block, pad, constant_values=pad_value) if any(p[1] for p in pad) else block


class SlabCrop(grain.transforms.RandomMap):
    """A reference-style segmentation crop (depth slab, in-plane rescale and crop), then augmented.

    Input {'volume', 'label_map', 'pad_value'} -> {'image' (size..., C) float32, 'label' (size...) uint8}.
    """

    def __init__(
        self,
        size: Sequence[int],
        sampler: str,
        augmentation: augment.Augment,
        *,
        foreground_probability: float = 0.0,
        max_class_ratio: float = 1.0,
        rescale_size: int = 0,
        rescale_ratio: Sequence[float] = (1.0, 1.0),
    ):
        if sampler not in SAMPLERS[1:]:
            raise ValueError(f"SlabCrop samples {SAMPLERS[1:]}; got {sampler!r}")
        self.size, self.sampler, self.augment = tuple(int(s) for s in size), sampler, augmentation
        self.foreground_probability, self.max_class_ratio = float(foreground_probability), float(max_class_ratio)
        self.rescale_size, self.rescale_ratio = int(rescale_size), tuple(float(r) for r in rescale_ratio)
        self._ranges: dict[str, tuple[int, int] | None] = {}

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        volume, label = element["volume"], element["label_map"]
        depth_index = np.clip(self._depth_start(label, rng) + np.arange(self.size[0]), 0, label.shape[0] - 1)
        scaled = tuple(volume.shape[1:3])
        if self.rescale_size:
            scaled = rescaled_shape(scaled, self.rescale_size, rng.uniform(*self.rescale_ratio))
        offset = [int(rng.integers(0, max(s - c, 0) + 1)) for s, c in zip(scaled, self.size[1:])]
        crop = dict(scaled=scaled, offset=offset, crop=self.size[1:])
        image = rescaled_crop(volume, depth_index, linear=True, pad_value=element["pad_value"], **crop)
        labels = rescaled_crop(label, depth_index, linear=False, pad_value=0, **crop)
        return self.augment({"image": image.astype(np.float32), "label": labels.astype(np.uint8)}, rng)

    def _depth_start(self, label: np.ndarray, rng: np.random.Generator) -> int:
        labelled = self._labelled_range(label)
        depth = self.size[0]
        if self.sampler == "random_z_crop":
            return random_z_start(label, depth, rng, labelled, self.max_class_ratio)
        if labelled is not None and rng.random() < self.foreground_probability:
            key = int(rng.integers(labelled[0], labelled[1] + 1))
        else:
            key = int(rng.integers(0, label.shape[0]))
        return key - (depth - 1) // 2

    def _labelled_range(self, label: np.ndarray) -> tuple[int, int] | None:
        """`labelled_range`, remembered per memory-mapped file (reading a label volume costs tens of ms)."""
        name = getattr(label, "filename", None)
        if name is None:
            return labelled_range(label)
        if name not in self._ranges:
            self._ranges[name] = labelled_range(label)
        return self._ranges[name]


def train_crop(data: Any, augmentation: augment.Augment) -> grain.transforms.RandomMap:
    """The segmentation training crop `data.crop_sampler` names, with its options from the `data` config block."""
    if data.crop_sampler not in SAMPLERS:
        raise ConfigError(f"data.crop_sampler must be one of {SAMPLERS}; got {data.crop_sampler!r}")
    ratio = tuple(float(r) for r in data.rescale_ratio)
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1] or data.rescale_size < 0:
        raise ConfigError(f"data.rescale_ratio must be (low, high) with 0 < low <= high; got {data.rescale_ratio}")
    if data.crop_sampler == "foreground":
        if data.rescale_size:
            raise ConfigError('data.rescale_size applies to data.crop_sampler "random_z_crop" or "key_slice"; set it to 0')
        return augment.RandomForegroundCrop(data.crop_size, data.foreground_probability, augmentation)
    return SlabCrop(
        data.crop_size,
        data.crop_sampler,
        augmentation,
        foreground_probability=data.foreground_probability,
        max_class_ratio=data.max_class_ratio,
        rescale_size=data.rescale_size,
        rescale_ratio=ratio,
    )

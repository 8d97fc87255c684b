"""Host-side crops and augmentations of 3D volumes, as grain transforms.

Volumes are model-space arrays (D, H, W, C) (often memory-mapped from the
preprocessing cache, so a crop reads only its own voxels); label maps are
(D, H, W). Crops reaching outside a volume are padded: images with the
volume's background value, labels with 0.

Randomness comes only from the `np.random.Generator` grain passes to each
`RandomMap`, derived from the seed and the example's position in the stream,
so augmentations are reproducible and survive checkpoint/resume.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from vdt_jax.errors import ConfigError

Example = dict[str, Any]


def crop(volume: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """volume[start : start + size] on the first three axes, padded where it leaves the volume."""
    start = np.asarray(start, np.int64)
    size = np.asarray(size, np.int64)
    shape = np.asarray(volume.shape[:3])
    lo = np.clip(start, 0, shape)
    hi = np.clip(start + size, 0, shape)
    inside = np.asarray(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    before, after = lo - start, (start + size) - hi
    if not (before.any() or after.any()):
        return np.array(inside)  # a copy, never a view into a memory map
    pad = [(int(b), int(a)) for b, a in zip(before, after)] + [(0, 0)] * (volume.ndim - 3)
    return np.pad(inside, pad, mode="constant", constant_values=pad_value)


def centred_start(centre: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """Start of a `size` crop whose centre voxel is nearest to `centre` (model-space index)."""
    return np.floor(np.asarray(centre, np.float64) + 0.5).astype(np.int64) - np.asarray(size) // 2


def random_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    foreground: Sequence[np.ndarray] = (),
    foreground_probability: float = 0.0,
) -> np.ndarray:
    """Start of a random crop; with `foreground_probability`, centred on a random foreground voxel.

    Args:
      shape: (D, H, W) of the volume.
      size: crop size; volumes smaller than the crop get a start <= 0 (padding).
      rng: the generator.
      foreground: per foreground class, an (n, 3) array of voxel indices (may be
        empty). A class is drawn uniformly among the non-empty ones, then a voxel,
        so small structures are seen as often as large ones.
      foreground_probability: chance of a foreground-centred crop when any
        foreground exists.
    """
    shape, size = np.asarray(shape), np.asarray(size)
    classes = [coords for coords in foreground if len(coords)]
    if classes and rng.random() < foreground_probability:
        coords = classes[rng.integers(len(classes))]
        centre = coords[rng.integers(len(coords))]
        start = centre - size // 2 + rng.integers(-(size // 4), size // 4 + 1)
        # Keep the crop inside the volume where it fits; a centre near the border stays in view.
        return np.clip(start, np.minimum(shape - size, 0), np.maximum(shape - size, 0))
    high = shape - size
    return np.where(high >= 0, rng.integers(0, np.maximum(high, 0) + 1), high // 2)


def random_flip(arrays: list[np.ndarray], rng: np.random.Generator, axes: Sequence[int]) -> list[np.ndarray]:
    """Flip every array along each of `axes` with probability 1/2 (the same draw for all arrays)."""
    for axis in axes:
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    return arrays


def random_flip_one_axis(arrays: list[np.ndarray], rng: np.random.Generator, axes: Sequence[int]) -> list[np.ndarray]:
    """Flip along at most one of `axes`: none or each axis with probability 1 / (len(axes) + 1).

    The reference's LIDC transform (after ACS) draws this way: with three axes,
    no flip and each single-axis flip are 1/4 each.
    """
    choice = int(rng.integers(len(axes) + 1)) - 1
    return arrays if choice < 0 else [np.flip(a, axes[choice]) for a in arrays]


FLIP_MODES = {"independent": random_flip, "one_axis": random_flip_one_axis}


def random_rot90(arrays: list[np.ndarray], rng: np.random.Generator, planes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Rotate by a random multiple of 90 degrees in each plane whose two sides are equal."""
    for plane in planes:
        if arrays[0].shape[plane[0]] != arrays[0].shape[plane[1]]:
            continue
        k = int(rng.integers(4))
        if k:
            arrays = [np.rot90(a, k, axes=plane) for a in arrays]
    return arrays


ALL_PLANES = ((0, 1), (0, 2), (1, 2))


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random 90-degree rotations, then flips, of 'image' and (if present) 'label' together.

    `flip_mode` "independent" flips each of `flip_axes` with probability 1/2;
    "one_axis" flips along at most one of them (`random_flip_one_axis`).
    """

    flip_axes: tuple[int, ...] = ()
    rotate_planes: tuple[tuple[int, int], ...] = ()
    flip_mode: str = "independent"

    def __post_init__(self):
        if self.flip_mode not in FLIP_MODES:
            raise ConfigError(f"data.flip_mode must be one of {sorted(FLIP_MODES)}; got {self.flip_mode!r}")

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        keys = [k for k in ("image", "label") if k in example and np.ndim(example[k]) >= 3]
        arrays = [example[k] for k in keys]
        arrays = random_rot90(arrays, rng, self.rotate_planes)
        arrays = FLIP_MODES[self.flip_mode](arrays, rng, self.flip_axes)
        return {**example, **{k: np.ascontiguousarray(a) for k, a in zip(keys, arrays)}}


class RandomCentredCrop(grain.transforms.RandomMap):
    """Classification: a crop around the example's 'centre', shifted by up to +-max_shift voxels, augmented.

    Input {'volume', 'centre', 'pad_value', 'label'} -> {'image' (size..., C) float32, 'label' int32}.
    """

    def __init__(self, size: Sequence[int], max_shift: int, augment: Augment):
        self.size, self.max_shift, self.augment = tuple(size), int(max_shift), augment

    def random_map(self, element: Example, rng: np.random.Generator) -> Example:
        shift = rng.integers(-self.max_shift, self.max_shift + 1, 3)
        start = centred_start(element["centre"], self.size) + shift
        image = crop(element["volume"], start, self.size, element["pad_value"]).astype(np.float32)
        return self.augment({"image": image, "label": np.int32(element["label"])}, rng)


class CentredCrop(grain.transforms.Map):
    """Classification evaluation: the crop around 'centre', no randomness."""

    def __init__(self, size: Sequence[int]):
        self.size = tuple(size)

    def map(self, element: Example) -> Example:
        start = centred_start(element["centre"], self.size)
        image = crop(element["volume"], start, self.size, element["pad_value"]).astype(np.float32)
        return {"image": image, "label": np.int32(element["label"])}


class RandomForegroundCrop(grain.transforms.RandomMap):
    """Segmentation: a random crop of image and label, foreground-centred with some probability, augmented.

    Input {'volume', 'label_map', 'foreground', 'pad_value'} ->
    {'image' (size..., C) float32, 'label' (size...) uint8}.
    """

    def __init__(self, size: Sequence[int], foreground_probability: float, augment: Augment):
        self.size, self.foreground_probability, self.augment = tuple(size), float(foreground_probability), augment

    def random_map(self, element: Example, rng: np.random.Generator) -> Example:
        volume = element["volume"]
        start = random_start(volume.shape[:3], self.size, rng, element["foreground"], self.foreground_probability)
        image = crop(volume, start, self.size, element["pad_value"]).astype(np.float32)
        label = crop(element["label_map"], start, self.size, 0).astype(np.uint8)
        return self.augment({"image": image, "label": label}, rng)

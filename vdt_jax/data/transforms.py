"""Host-side image transforms of the input pipelines, as grain transforms.

The host only decodes, crops, resizes and flips; every output stays a compact
uint8 (H, W, 3) RGB image plus an int32 label. Normalisation, the random
permutation of the three colour channels and the reshape into a
(3, H, W, 1) volume (the variable dimension transform) run on the accelerator
inside the jitted step (`vdt_jax.vdt`), which keeps host work and host-to-device
traffic four times smaller than float32 volumes would.

Randomness comes only from the `np.random.Generator` grain hands to each
`RandomMap`, which grain derives from the seed and the example's position in
the sampler, so the augmentation of an example does not depend on the number
of worker processes.

Geometry follows torchvision, as the reference PyTorch pipeline does:
`RandomResizedCrop` (area scale 0.08-1, log-uniform aspect ratio 3/4-4/3, ten
attempts then a centre-crop fallback, bilinear resize), horizontal flip with
p=0.5, and for evaluation a resize of the shorter side followed by a centre
crop.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import grain
import numpy as np
from PIL import Image

Example = dict[str, Any]
# (top, left, height, width) of a crop, in pixels.
Box = tuple[int, int, int, int]


def decode_image(encoded: bytes) -> np.ndarray:
    """Decodes JPEG/PNG bytes into an RGB uint8 array of shape (H, W, 3).

    Grayscale ('L'), CMYK, palette and alpha images are converted to RGB, so
    every image becomes exactly three depth slices later. Grayscale images get
    three identical channels.
    """
    with Image.open(io.BytesIO(encoded)) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Box:
    """Samples a crop box the way torchvision's RandomResizedCrop does.

    The crop covers a uniform fraction `scale` of the image area with an aspect
    ratio (width / height) drawn log-uniformly from `ratio`. If no sample fits
    inside the image within `attempts` tries, the largest centred crop whose
    aspect ratio lies in `ratio` is returned.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    return _centre_fallback_box(height, width, ratio)


def _centre_fallback_box(height: int, width: int, ratio: tuple[float, float]) -> Box:
    """The whole image, trimmed to the nearest allowed aspect ratio, centred."""
    aspect = width / height
    if aspect < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resized_crop(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crops `box` out of `image` and resizes it bilinearly to (size, size)."""
    top, left, crop_h, crop_w = box
    pil = Image.fromarray(image)
    # PIL crops and resizes in one pass; its bilinear filter widens with the
    # downscale factor, i.e. it antialiases like torchvision on PIL images.
    resized = pil.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    return np.asarray(resized, dtype=np.uint8)


def resize_shorter_side(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resizes bilinearly so the shorter side is `shorter`, keeping the aspect ratio.

    The longer side is truncated to an int, as torchvision's Resize(int) does.
    """
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = shorter, int(shorter * width / height)
    else:
        new_h, new_w = int(shorter * height / width), shorter
    if (new_h, new_w) == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size) window; offsets rounded like torchvision's CenterCrop."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot centre-crop {size}x{size} out of a {height}x{width} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image[top : top + size, left : left + size]


# --- grain transforms --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodeExample(grain.transforms.Map):
    """TFDS record {'image': bytes, 'label', 'file_name'} -> {'image': RGB uint8, 'label': int32}.

    Attributes:
      keep_file_name: also pass 'file_name' through, as a str (tests use it to
        identify examples; training batches leave it out).
    """

    keep_file_name: bool = False

    def map(self, element: Example) -> Example:
        out = {"image": decode_image(element["image"]), "label": np.int32(element["label"])}
        if self.keep_file_name:
            name = element["file_name"]
            out["file_name"] = name.decode() if isinstance(name, bytes) else str(name)
        return out


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(grain.transforms.RandomMap):
    """Random area/aspect crop resized to (image_size, image_size); see `random_resized_crop_box`."""

    image_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def random_map(self, element: Example, rng: np.random.Generator) -> Example:
        image = element["image"]
        box = random_resized_crop_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        return {**element, "image": resized_crop(image, box, self.image_size)}


@dataclasses.dataclass(frozen=True)
class RandomHorizontalFlip(grain.transforms.RandomMap):
    """Mirrors the image left-right with probability `p`."""

    p: float = 0.5

    def random_map(self, element: Example, rng: np.random.Generator) -> Example:
        if rng.random() >= self.p:
            return element
        return {**element, "image": np.ascontiguousarray(element["image"][:, ::-1])}


@dataclasses.dataclass(frozen=True)
class ResizeCentreCrop(grain.transforms.Map):
    """Evaluation geometry: shorter side to `resize`, then a central `image_size` crop."""

    image_size: int
    resize: int

    def __post_init__(self):
        if self.resize < self.image_size:
            raise ValueError(
                f"eval_resize ({self.resize}) must be at least image_size ({self.image_size}): "
                "the centre crop is taken from the resized image"
            )

    def map(self, element: Example) -> Example:
        image = resize_shorter_side(element["image"], self.resize)
        return {**element, "image": np.ascontiguousarray(centre_crop(image, self.image_size))}

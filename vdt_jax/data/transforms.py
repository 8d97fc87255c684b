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
crop. The image operations themselves (and the choice of decoder and
resize filter) live in `image_ops.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from vdt_jax.data.image_ops import (  # noqa: F401  (re-exported: the transforms' building blocks)
    Box,
    centre_crop,
    check_choices,
    decode_image,
    random_resized_crop_box,
    resize_shorter_side,
    resized_crop,
)
from vdt_jax.errors import ConfigError

Example = dict[str, Any]


# --- grain transforms --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodeExample(grain.transforms.Map):
    """TFDS record {'image': bytes, 'label', 'file_name'} -> {'image': RGB uint8, 'label': int32}.

    Attributes:
      keep_file_name: also pass 'file_name' through, as a str (tests use it to
        identify examples; training batches leave it out).
      decoder: "pil" or "opencv" (`image_ops.DECODERS`).
    """

    keep_file_name: bool = False
    decoder: str = "pil"

    def map(self, element: Example) -> Example:
        out = {"image": decode_image(element["image"], self.decoder), "label": np.int32(element["label"])}
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
    interpolation: str = "bilinear_antialias"

    def random_map(self, element: Example, rng: np.random.Generator) -> Example:
        image = element["image"]
        box = random_resized_crop_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        return {**element, "image": resized_crop(image, box, self.image_size, self.interpolation)}


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
    interpolation: str = "bilinear_antialias"

    def __post_init__(self):
        if self.resize < self.image_size:
            raise ConfigError(
                f"eval_resize ({self.resize}) must be at least image_size ({self.image_size}): "
                "the centre crop is taken from the resized image"
            )

    def map(self, element: Example) -> Example:
        image = resize_shorter_side(element["image"], self.resize, self.interpolation)
        return {**element, "image": np.ascontiguousarray(centre_crop(image, self.image_size))}

"""`vdt_shapes`: a procedurally generated, ImageNet-shaped TFDS dataset.

A small labelled image dataset that needs no download, so every recipe and test
can run offline. Each image holds one object of one of ten classes (disc,
ellipse, square, triangle, hexagon, star, cross, ring, crescent, arrow) at a
random position, scale and rotation, over a textured background (smooth colour
noise, a gradient or stripes) with a few clutter marks and pixel noise. About
one image in ten is stored as a grayscale JPEG, as some ImageNet images are.

Colours are drawn independently of the class, on purpose: VDT pre-training
shuffles the RGB channels into a random depth order, so a class that could be
told by its colour would teach the network nothing about depth-invariance.
Only the shape carries the label; the object always differs from its
background in luminance, so grayscale images stay legible.

The features match `imagenet2012` ('image' JPEG, 'label', 'file_name'), so the
input pipeline treats both the same. Images are generated as PIL images and
stored as encoded bytes, so preparing the dataset needs no TensorFlow:

    import tensorflow_datasets as tfds
    import vdt_jax.data.shapes  # registers the builder
    builder = tfds.builder("vdt_shapes/demo", data_dir="/tmp/tfds")
    builder.download_and_prepare(file_format="array_record")

Every example is a pure function of (split, index), so the dataset is the same
on every machine.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

CLASS_NAMES = (
    "disc",
    "ellipse",
    "square",
    "triangle",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
    "arrow",
)

# Shapes are drawn at this multiple of the output size and downsampled, which
# gives anti-aliased edges.
_SUPERSAMPLE = 3
# Seeds of the per-split random streams; example i of a split uses
# np.random.default_rng([split seed, i]).
_SPLIT_SEEDS = {"train": 1, "validation": 2}
_JPEG_QUALITY = 90


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Size of a `vdt_shapes` variant.

    Attributes:
      image_size: side of the square images, in pixels.
      num_train: examples in the 'train' split.
      num_validation: examples in the 'validation' split.
      grayscale_fraction: share of images stored as one-channel JPEGs.
    """

    image_size: int = 72
    num_train: int = 5000
    num_validation: int = 500
    grayscale_fraction: float = 0.1


class VdtShapes(tfds.core.GeneratorBasedBuilder):
    """Ten procedurally drawn shape classes on textured backgrounds."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesConfig(
            name="demo",
            description="72x72 images, 5000 train / 500 validation: a few-minute CPU demo.",
            image_size=72,
            num_train=5000,
            num_validation=500,
        ),
        ShapesConfig(
            name="tiny",
            description="32x32 images, 300 train / 100 validation: for tests.",
            image_size=32,
            num_train=300,
            num_validation=100,
        ),
    ]
    DEFAULT_CONFIG_NAME = "demo"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        config: ShapesConfig = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        config: ShapesConfig = self.builder_config
        for index in range(num_examples):
            image, label = render_example(split, index, config.image_size, config.grayscale_fraction)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
            file_name = f"{split}_{index:06d}_{CLASS_NAMES[label]}.jpg"
            yield index, {"image": buffer.getvalue(), "label": label, "file_name": file_name}


def render_example(
    split: str, index: int, image_size: int, grayscale_fraction: float = 0.1
) -> tuple[Image.Image, int]:
    """Draws example `index` of `split`.

    Classes cycle with the index (label = index % 10), so every split is
    balanced; all other choices come from a generator seeded by (split, index).

    Returns:
      The image ('RGB' or 'L' mode, image_size x image_size) and its label.
    """
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown vdt_shapes split {split!r}; expected one of {sorted(_SPLIT_SEEDS)}")
    rng = np.random.default_rng([_SPLIT_SEEDS[split], index])
    label = index % len(CLASS_NAMES)
    image = render_shape(rng, label, image_size)
    if rng.random() < grayscale_fraction:
        image = image.convert("L")
    return image, label


def render_shape(rng: np.random.Generator, label: int, image_size: int) -> Image.Image:
    """An RGB image_size x image_size image of shape CLASS_NAMES[label] in a random scene."""
    background = _random_background(rng, image_size)
    _draw_clutter(rng, background)
    colour = _contrasting_colour(rng, np.asarray(background).mean(axis=(0, 1)))
    alpha = _shape_mask(rng, CLASS_NAMES[label], image_size)
    return _composite(rng, background, alpha, colour)


# --- backgrounds -----------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blobs of colour: a coarse random grid upsampled with bicubic filtering."""
    cells = int(rng.integers(2, 6))
    grid = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32)


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size) coordinate along a random direction, in [-1, 1] roughly."""
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) * 2.0 - 1.0
    return xs * math.cos(angle) + ys * math.sin(angle)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear blend between two random colours along a random direction."""
    t = (_ramp(rng, size)[..., None] + 1.5) / 3.0
    return (1 - t) * _random_colour(rng) + t * _random_colour(rng)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft sinusoidal stripes of two random colours."""
    cycles = rng.uniform(1.5, 6.0)
    phase = rng.uniform(0, 2 * math.pi)
    t = 0.5 + 0.5 * np.sin(_ramp(rng, size) * cycles * math.pi + phase)[..., None]
    return (1 - t) * _random_colour(rng) + t * _random_colour(rng)


_BACKGROUNDS: tuple[Callable[[np.random.Generator, int], np.ndarray], ...] = (
    _smooth_noise,
    _gradient,
    _stripes,
)


def _random_background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    return Image.fromarray(np.clip(kind(rng, size), 0, 255).astype(np.uint8))


def _draw_clutter(rng: np.random.Generator, image: Image.Image) -> None:
    """Draws 0-3 thin lines or small dots, in place: distractors, not objects."""
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        fill = tuple(int(c) for c in _random_colour(rng))
        x0, y0 = rng.uniform(0, size, size=2)
        if rng.random() < 0.5:
            x1, y1 = np.array([x0, y0]) + rng.uniform(-0.4, 0.4, size=2) * size
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=max(1, size // 48))
        else:
            r = rng.uniform(0.02, 0.05) * size
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill)


def _luminance(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random colour whose luminance differs from the background's by >= 50."""
    target = _luminance(background_mean)
    colour = _random_colour(rng)
    for _ in range(20):
        if abs(_luminance(colour) - target) >= 50:
            return colour
        colour = _random_colour(rng)
    # Rarely reached: push the colour away from the background luminance.
    return np.full(3, 255.0) if target < 128 else np.zeros(3)


# --- shapes ----------------------------------------------------------------


def _regular_polygon(sides: int, radius: float = 1.0, start: float = -math.pi / 2) -> np.ndarray:
    angles = start + np.arange(sides) * 2 * math.pi / sides
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer = _regular_polygon(5)
    inner = _regular_polygon(5, radius=0.45, start=-math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(arm: float = 0.33) -> np.ndarray:
    a = arm
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    )


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)])


def _ellipse(aspect: float) -> np.ndarray:
    return _regular_polygon(48) * np.array([1.0, aspect])


def _shape_parts(rng: np.random.Generator, name: str) -> list[tuple[np.ndarray, int]]:
    """Polygons in unit coordinates, each with the mask value it paints.

    Later parts paint over earlier ones, so value 0 cuts holes (ring, crescent).
    """
    if name == "disc":
        return [(_regular_polygon(48), 255)]
    if name == "ellipse":
        return [(_ellipse(rng.uniform(0.4, 0.6)), 255)]
    if name == "square":
        return [(_regular_polygon(4, start=math.pi / 4), 255)]
    if name == "triangle":
        return [(_regular_polygon(3) * 1.1 + np.array([0.0, 0.2]), 255)]
    if name == "hexagon":
        return [(_regular_polygon(6), 255)]
    if name == "star":
        return [(_star() * 1.1, 255)]
    if name == "cross":
        return [(_cross(), 255)]
    if name == "ring":
        return [(_regular_polygon(48), 255), (_regular_polygon(48, radius=rng.uniform(0.5, 0.65)), 0)]
    if name == "crescent":
        offset = np.array([rng.uniform(0.35, 0.55), 0.0])
        return [(_regular_polygon(48), 255), (_regular_polygon(48, radius=0.85) + offset, 0)]
    if name == "arrow":
        return [(_arrow(), 255)]
    raise ValueError(f"unknown shape {name!r}; expected one of {CLASS_NAMES}")


def _shape_mask(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """An anti-aliased float mask in [0, 1] of one randomly placed shape."""
    parts = _shape_parts(rng, name)
    radius = rng.uniform(0.2, 0.36) * size
    angle = rng.uniform(0, 2 * math.pi)
    centre = size / 2 + rng.uniform(-0.18, 0.18, size=2) * size
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, value in parts:
        points = (polygon @ rotation.T * radius + centre) * _SUPERSAMPLE
        draw.polygon([tuple(p) for p in points], fill=value)
    mask = mask.resize((size, size), Image.BOX)
    return np.asarray(mask, np.float32)[..., None] / 255.0


def _composite(rng: np.random.Generator, background: Image.Image, alpha: np.ndarray, colour: np.ndarray) -> Image.Image:
    """Paints `colour` with soft shading over the background through `alpha`."""
    size = background.size[0]
    shading = 1.0 + rng.uniform(0.0, 0.25) * _ramp(rng, size)[..., None]
    foreground = colour * shading
    image = alpha * foreground + (1 - alpha) * np.asarray(background, np.float32)
    image += rng.normal(0, rng.uniform(2, 10), size=image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))

"""The tiny generated image dataset and helpers shared by the image-pipeline tests."""

from __future__ import annotations

import io

import ml_collections
import numpy as np
from PIL import Image

from vdt_jax.data import images, shapes

TINY = "vdt_shapes/tiny"
NUM_TRAIN, NUM_EVAL, SIZE = 300, 100, 32


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    """The `data` block of a pre-training config for the tiny vdt_shapes dataset in `data_dir`."""
    config = ml_collections.ConfigDict(
        dict(
            name=TINY,
            data_dir=str(data_dir),
            train_split="train",
            eval_split="validation",
            image_size=24,
            eval_resize=28,
            min_crop_scale=0.08,
            num_workers=0,
            prefetch_buffer=2,
            decoder="pil",
            interpolation="bilinear_antialias",
        )
    )
    config.update(overrides)
    return config


def prepare_tiny(directory) -> str:
    images.prepare_dataset(make_config(directory))
    return directory


def label_from_file_name(name: str) -> int:
    """vdt_shapes file names end with the class name: 'train_000012_square.jpg'."""
    return shapes.CLASS_NAMES.index(name.rsplit("_", 1)[1].removesuffix(".jpg"))


def take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()

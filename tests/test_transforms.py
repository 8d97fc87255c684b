"""Tests of vdt_jax.data.transforms: decoding, RandomResizedCrop, flips and the eval geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.image_fakes import jpeg_bytes
from vdt_jax.data import shapes, transforms


def test_random_resized_crop_shape_and_determinism():
    image = np.random.default_rng(0).integers(0, 256, size=(50, 80, 3), dtype=np.uint8)
    crop = transforms.RandomResizedCrop(24)

    def run(seed):
        return crop.random_map({"image": image, "label": np.int32(3)}, np.random.default_rng(seed))

    out = run(1)
    assert out["image"].shape == (24, 24, 3) and out["image"].dtype == np.uint8
    assert out["label"] == 3
    np.testing.assert_array_equal(out["image"], run(1)["image"])
    assert not np.array_equal(out["image"], run(2)["image"])


def test_random_resized_crop_box_statistics():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = transforms.random_resized_crop_box(rng, 60, 90)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        # Rounding to whole pixels moves area and aspect a little past the bounds.
        assert 0.08 * 0.8 <= h * w / (60 * 90) <= 1.0
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15


def test_random_resized_crop_falls_back_to_centre_crop():
    # An area of the whole image with aspect ratio >= 3 never fits a square image.
    box = transforms.random_resized_crop_box(np.random.default_rng(0), 60, 60, scale=(1.0, 1.0), ratio=(3.0, 4.0))
    assert box == (20, 0, 20, 60)
    box = transforms.random_resized_crop_box(np.random.default_rng(0), 40, 100, scale=(1.0, 1.0))
    assert box == (0, 23, 40, 53)  # too wide: trimmed to 4/3


def test_horizontal_flip():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    example = {"image": image, "label": np.int32(0)}
    flipped = transforms.RandomHorizontalFlip(p=1.0).random_map(example, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped["image"], image[:, ::-1])
    kept = transforms.RandomHorizontalFlip(p=0.0).random_map(example, np.random.default_rng(0))
    np.testing.assert_array_equal(kept["image"], image)
    flip = transforms.RandomHorizontalFlip()
    flips = [
        not np.array_equal(flip.random_map(example, np.random.default_rng(s))["image"], image) for s in range(400)
    ]
    assert 0.4 < np.mean(flips) < 0.6


def test_eval_resize_and_centre_crop_geometry():
    assert transforms.resize_shorter_side(np.zeros((40, 80, 3), np.uint8), 20).shape == (20, 40, 3)
    assert transforms.resize_shorter_side(np.zeros((90, 30, 3), np.uint8), 20).shape == (60, 20, 3)
    rows, cols = np.mgrid[0:20, 0:40]
    index_image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    crop = transforms.centre_crop(index_image, 16)
    assert crop[0, 0, 0] == 2 and crop[0, 0, 1] == 12 and crop[-1, -1, 0] == 17 and crop[-1, -1, 1] == 27

    # Left half red, right half blue; 40x80 -> 20x40 -> central 16x16 starts at
    # column 12, so the colour edge (resized column 20) lands at crop column 8.
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40, 0] = 255
    image[:, 40:, 2] = 255
    out = transforms.ResizeCentreCrop(16, 20).map({"image": image, "label": np.int32(0)})["image"]
    assert out.shape == (16, 16, 3)
    assert (out[:, :7, 0] == 255).all() and (out[:, :7, 2] == 0).all()
    assert (out[:, 9:, 2] == 255).all() and (out[:, 9:, 0] == 0).all()
    with pytest.raises(ValueError, match="eval_resize"):
        transforms.ResizeCentreCrop(32, 28)


def test_decode_grayscale_and_cmyk_to_rgb():
    rgb = shapes.render_shape(np.random.default_rng(0), 3, 48)
    gray = transforms.decode_image(jpeg_bytes(rgb.convert("L")))
    assert gray.shape == (48, 48, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])

    cmyk_jpeg = jpeg_bytes(rgb.convert("CMYK"))
    assert Image.open(io.BytesIO(cmyk_jpeg)).mode == "CMYK"
    cmyk = transforms.decode_image(cmyk_jpeg)
    assert cmyk.shape == (48, 48, 3) and cmyk.dtype == np.uint8
    # Close to the original colours (an inverted or dropped channel would be far off).
    assert np.abs(cmyk.astype(int) - np.asarray(rgb).astype(int)).mean() < 4

    buffer = io.BytesIO()
    rgb.convert("RGBA").save(buffer, format="PNG")
    assert transforms.decode_image(buffer.getvalue()).shape == (48, 48, 3)


def test_decode_example():
    record = {"image": jpeg_bytes(Image.new("L", (5, 7), 9)), "label": 4, "file_name": b"a.jpg"}
    out = transforms.DecodeExample().map(record)
    assert set(out) == {"image", "label"} and out["image"].shape == (7, 5, 3)
    assert out["label"].dtype == np.int32 and out["label"] == 4
    assert transforms.DecodeExample(keep_file_name=True).map(record)["file_name"] == "a.jpg"

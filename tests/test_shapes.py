"""Tests of vdt_jax.data.shapes: the generated `vdt_shapes` TFDS dataset."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.image_fakes import NUM_EVAL, NUM_TRAIN, SIZE, TINY, label_from_file_name
from vdt_jax.data import images, shapes, transforms


def test_shapes_prepares_and_reads_without_tensorflow(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow_datasets as tfds
        import vdt_jax.data.shapes
        builder = tfds.builder({TINY!r}, data_dir={str(tmp_path)!r})
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        train = tfds.data_source({TINY!r}, split="train", data_dir={str(tmp_path)!r}, download=False)
        validation = tfds.data_source({TINY!r}, split="validation", data_dir={str(tmp_path)!r}, download=False)
        example = train[0]
        print(len(train), len(validation), example["image"].shape, example["image"].dtype)
        print("tensorflow" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counts, tensorflow_loaded = result.stdout.strip().splitlines()[-2:]
    assert counts == f"{NUM_TRAIN} {NUM_EVAL} ({SIZE}, {SIZE}, 3) uint8"
    assert tensorflow_loaded == "False"


def test_shapes_records(data_dir):
    builder = tfds.builder(TINY, data_dir=str(data_dir))
    assert builder.info.features["label"].names == list(shapes.CLASS_NAMES)
    for split, count in (("train", NUM_TRAIN), ("validation", NUM_EVAL)):
        source = images.TfdsSource(TINY, split, str(data_dir))
        records = [source[i] for i in range(len(source))]
        names = [r["file_name"].decode() for r in records]
        labels = np.array([r["label"] for r in records])
        assert len(records) == count and len(set(names)) == count
        assert all(name.startswith(split) for name in names)
        assert [label_from_file_name(n) for n in names] == labels.tolist()
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), count // 10)
        modes = [Image.open(io.BytesIO(r["image"])).mode for r in records]
        assert {m for m in modes} == {"RGB", "L"}
        assert all(transforms.decode_image(r["image"]).shape == (SIZE, SIZE, 3) for r in records[:20])


def test_render_is_deterministic_per_split_and_index():
    first, label = shapes.render_example("train", 7, 32)
    again, _ = shapes.render_example("train", 7, 32)
    other, _ = shapes.render_example("validation", 7, 32)
    assert label == 7 and first.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first.convert("RGB")), np.asarray(other.convert("RGB")))
    with pytest.raises(ValueError, match="unknown vdt_shapes split 'test'"):
        shapes.render_example("test", 0, 32)


def _rotation_invariant_shape_features(images: np.ndarray) -> np.ndarray:
    """Angular-harmonic magnitudes of the gradient image's Fourier spectrum.

    The spectrum magnitude ignores where the object is; the magnitudes of
    harmonics along circles ignore its rotation; shapes differ in their
    symmetry (star 5-fold, hexagon 6-fold, square 4-fold, ...) and radial profile.
    """
    gray = images.mean(-1)
    gy, gx = np.gradient(gray - gray.mean((1, 2), keepdims=True), axis=(1, 2))
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(np.hypot(gx, gy)), axes=(1, 2)))
    n = images.shape[1]
    radius = np.arange(1, n // 2 - 1)[:, None]
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)[None]
    rows = np.round(n // 2 + radius * np.sin(theta)).astype(int)
    cols = np.round(n // 2 + radius * np.cos(theta)).astype(int)
    circles = spectrum[:, rows, cols]
    harmonics = np.abs(np.fft.rfft(circles, axis=-1))[..., :13]
    harmonics[..., 1:] /= harmonics[..., :1] + 1e-6
    harmonics[..., 0] = np.log1p(circles.mean(-1))
    return harmonics.reshape(len(images), -1)


def _ridge_accuracy(train_x, train_y, test_x, test_y) -> float:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    b = np.c_[(test_x - mean) / std, np.ones(len(test_x))]
    weights = np.linalg.solve(a.T @ a + 10 * np.eye(a.shape[1]), a.T @ np.eye(10)[train_y])
    return float(np.mean(np.argmax(b @ weights, 1) == test_y))


def test_shapes_are_learnable_and_colour_is_not_the_label():
    def render(split, count):
        pairs = [shapes.render_example(split, i, 32) for i in range(count)]
        return np.stack([np.asarray(p[0].convert("RGB"), np.float32) for p in pairs]), np.array([p[1] for p in pairs])

    train_x, train_y = render("train", 1000)
    test_x, test_y = render("validation", 300)
    shape_accuracy = _ridge_accuracy(
        _rotation_invariant_shape_features(train_x), train_y, _rotation_invariant_shape_features(test_x), test_y
    )
    colour_accuracy = _ridge_accuracy(train_x.mean((1, 2)), train_y, test_x.mean((1, 2)), test_y)
    assert shape_accuracy > 0.45, shape_accuracy  # chance is 0.1
    assert colour_accuracy < 0.18, colour_accuracy

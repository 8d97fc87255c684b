"""Tests of vdt_jax.data: the vdt_shapes builder, host transforms and grain loaders.

Everything runs on the 'tiny' vdt_shapes config (32x32, 300 train / 100
validation) generated into a temporary directory.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from vdt_jax.data import pipeline, shapes, transforms

TINY = "vdt_shapes/tiny"
NUM_TRAIN, NUM_EVAL, SIZE = 300, 100, 32


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        dict(
            name=TINY,
            data_dir=str(data_dir),
            train_split="train",
            eval_split="validation",
            image_size=24,
            eval_resize=28,
            num_workers=0,
            prefetch_buffer=2,
            decoder="pil",
            interpolation="bilinear_antialias",
        )
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    pipeline.prepare_dataset(make_config(directory))
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


# --- the vdt_shapes builder --------------------------------------------------


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
        source = pipeline.TfdsSource(TINY, split, str(data_dir))
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


# --- transforms --------------------------------------------------------------


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


# --- dataset preparation -----------------------------------------------------


def test_dataset_info(data_dir):
    info = pipeline.dataset_info(make_config(data_dir))
    assert info == pipeline.DatasetInfo(num_classes=10, num_train_examples=NUM_TRAIN, num_eval_examples=NUM_EVAL)


def test_prepare_dataset_errors(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar") as error:
        pipeline.prepare_dataset(make_config(tmp_path, name="imagenet2012"))
    assert "download_and_prepare" in str(error.value) and str(tmp_path) in str(error.value)
    with pytest.raises(ValueError, match="data.eval_split='test'"):
        pipeline.prepare_dataset(make_config(data_dir, eval_split="test"))


# --- training loader ---------------------------------------------------------


def train_iterator(data_dir, *, seed=0, batch=30, process_index=0, process_count=1, **overrides):
    loader = pipeline._train_loader(
        make_config(data_dir, **overrides),
        seed=seed,
        per_process_batch=batch,
        process_index=process_index,
        process_count=process_count,
        keep_file_name=True,
    )
    return iter(loader)


def test_train_batches(data_dir):
    loader = pipeline.train_loader(
        make_config(data_dir), seed=0, per_process_batch=8, process_index=0, process_count=1
    )
    batch = next(iter(loader))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_train_epochs_cover_the_data_and_reshuffle(data_dir):
    batches = take(train_iterator(data_dir), 2 * NUM_TRAIN // 30)
    names = [n for b in batches for n in b["file_name"]]
    first, second = names[:NUM_TRAIN], names[NUM_TRAIN:]
    assert sorted(first) == sorted(second) and len(set(first)) == NUM_TRAIN
    assert first != second
    labels = np.concatenate([b["label"] for b in batches])
    assert labels.tolist() == [label_from_file_name(n) for n in names]


def test_train_determinism_and_resume(data_dir):
    batches = take(train_iterator(data_dir, seed=3), 4)
    assert_batches_equal(batches, take(train_iterator(data_dir, seed=3), 4))
    other = take(train_iterator(data_dir, seed=4), 1)[0]
    assert not np.array_equal(batches[0]["image"], other["image"])

    # Resume across an epoch boundary (10 batches of 30 per epoch).
    iterator = train_iterator(data_dir, seed=3)
    take(iterator, 8)
    state = iterator.get_state()
    expected = take(iterator, 5)
    resumed = train_iterator(data_dir, seed=3)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 5), expected)


@pytest.mark.parametrize("process_count", [2, 3])
def test_train_process_shards_are_disjoint_and_cover_the_data(data_dir, process_count):
    per_process = NUM_TRAIN // process_count
    shards = []
    for index in range(process_count):
        iterator = train_iterator(data_dir, batch=per_process // 5, process_index=index, process_count=process_count)
        shards.append({n for b in take(iterator, 5) for n in b["file_name"]})
        assert len(shards[-1]) == per_process
    assert len(set.union(*shards)) == NUM_TRAIN


def test_train_with_worker_processes(data_dir):
    flags.FLAGS.mark_as_parsed()
    in_process = take(train_iterator(data_dir, batch=10), 4)
    iterator = train_iterator(data_dir, batch=10, num_workers=2)
    with_workers = take(iterator, 4)

    # Same examples with the same augmentation; 2 workers regroup each pair of batches.
    def by_name(batches):
        return {n: img.tobytes() for b in batches for n, img in zip(b["file_name"], b["image"])}

    assert by_name(with_workers[:2]) == by_name(in_process[:2])
    assert by_name(with_workers) == by_name(in_process)

    state = iterator.get_state()
    expected = take(iterator, 3)
    resumed = train_iterator(data_dir, batch=10, num_workers=2)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), expected)


# --- evaluation batches ------------------------------------------------------


def collect_eval(data_dir, *, batch, process_count, **overrides) -> list[list[dict]]:
    return [
        list(
            pipeline._eval_batches(
                make_config(data_dir, **overrides),
                per_process_batch=batch,
                process_index=index,
                process_count=process_count,
                keep_file_name=True,
            )
        )
        for index in range(process_count)
    ]


@pytest.mark.parametrize("process_count,batch", [(1, 16), (2, 16), (3, 16), (3, 64), (7, 8)])
def test_eval_sees_every_example_once(data_dir, process_count, batch):
    per_process = collect_eval(data_dir, batch=batch, process_count=process_count)
    expected_batches = -(-(-(-NUM_EVAL // process_count)) // batch)
    assert [len(batches) for batches in per_process] == [expected_batches] * process_count
    names = []
    for batches in per_process:
        for b in batches:
            mask = b["mask"]
            assert b["image"].shape == (batch, 24, 24, 3) and b["image"].dtype == np.uint8
            assert b["label"].dtype == np.int32 and mask.dtype == bool
            assert (mask == (np.arange(batch) < mask.sum())).all()  # padding only at the end
            assert (b["image"][~mask] == 0).all() and (b["label"][~mask] == 0).all()
            assert (b["file_name"][~mask] == "").all()
            real = b["file_name"][mask].tolist()
            assert b["label"][mask].tolist() == [label_from_file_name(n) for n in real]
            names += real
    assert len(names) == NUM_EVAL and len(set(names)) == NUM_EVAL


def test_eval_public_api_and_worker_processes(data_dir):
    batches = list(
        pipeline.eval_batches(make_config(data_dir), per_process_batch=16, process_index=1, process_count=2)
    )
    assert len(batches) == 4 and set(batches[0]) == {"image", "label", "mask"}
    assert [int(b["mask"].sum()) for b in batches] == [16, 16, 16, 2]

    flags.FLAGS.mark_as_parsed()
    with_workers = collect_eval(data_dir, batch=16, process_count=2, num_workers=2)[1]
    assert [int(b["mask"].sum()) for b in with_workers] == [16, 16, 16, 2]
    names = sorted(n for b in with_workers for n in b["file_name"][b["mask"]])
    in_process = collect_eval(data_dir, batch=16, process_count=2)[1]
    assert names == sorted(n for b in in_process for n in b["file_name"][b["mask"]])

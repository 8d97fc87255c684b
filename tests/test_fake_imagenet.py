"""The real TFDS `imagenet2012` builder, prepared from a miniature fake manual dir.

Checks that the ILSVRC2012 tar layout written by `write_fake_imagenet` goes
through TFDS's own builder (TensorFlow needed for that step only) and comes out
of `train_loader` / `eval_batches` with the right labels and file names.
"""

from __future__ import annotations

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="preparing the imagenet2012 builder needs TensorFlow (pip install -e .[prepare])")

import tensorflow_datasets as tfds  # noqa: E402

from vdt_jax.data import fake_imagenet, images, transforms  # noqa: E402

NUM_CLASSES, IMAGES_PER_CLASS, NUM_VAL = 8, 4, 8


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> ml_collections.ConfigDict:
    manual_dir = tmp_path_factory.mktemp("manual")
    data_dir = tmp_path_factory.mktemp("tfds")
    fake_imagenet.write_fake_imagenet(
        manual_dir, num_classes=NUM_CLASSES, images_per_class=IMAGES_PER_CLASS, num_val=NUM_VAL, seed=0
    )
    builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False),
    )
    config = ml_collections.ConfigDict(
        dict(
            name="imagenet2012",
            data_dir=str(data_dir),
            train_split="train",
            eval_split="validation",
            image_size=32,
            eval_resize=36,
            min_crop_scale=0.08,
            num_workers=0,
            prefetch_buffer=2,
            decoder="pil",
            interpolation="bilinear_antialias",
        )
    )
    images.prepare_dataset(config)  # Finds it prepared: no error.
    return config


def label_of(synset: str) -> int:
    """ImageNet labels index the synsets of TFDS's labels.txt (sorted WordNet ids)."""
    return tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split().index(synset)


def test_dataset_info(config):
    info = images.dataset_info(config)
    assert info == images.DatasetInfo(
        num_classes=1000,
        num_train_examples=NUM_CLASSES * IMAGES_PER_CLASS,
        num_eval_examples=NUM_VAL,
        class_names=info.class_names,
    )
    assert len(info.class_names) == 1000 and len(set(info.class_names)) == 1000  # the synsets, for model cards


def test_train_split_through_the_loader(config):
    synsets = fake_imagenet.train_synsets(NUM_CLASSES, NUM_VAL)
    loader = images.train_loader(
        config, seed=0, per_process_batch=8, process_index=0, process_count=1, keep_file_name=True
    )
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(NUM_CLASSES * IMAGES_PER_CLASS // 8)]  # one epoch
    names = [n for b in batches for n in b["file_name"]]
    assert sorted(names) == sorted(f"{s}_{i}.JPEG" for s in synsets for i in range(IMAGES_PER_CLASS))
    labels = np.concatenate([b["label"] for b in batches])
    assert labels.tolist() == [label_of(n.split("_")[0]) for n in names]
    pixels = np.concatenate([b["image"] for b in batches])
    assert pixels.shape == (len(names), 32, 32, 3) and pixels.dtype == np.uint8
    gray = pixels[names.index(f"{synsets[0]}_0.JPEG")]  # stored as a grayscale JPEG
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()


def test_cmyk_record_decodes_to_rgb(config):
    source = images.TfdsSource("imagenet2012", "train", config.data_dir)
    cmyk_name = f"{fake_imagenet.train_synsets(NUM_CLASSES, NUM_VAL)[0]}_1.JPEG"
    record = next(source[i] for i in range(len(source)) if source[i]["file_name"].decode() == cmyk_name)
    assert Image.open(io.BytesIO(record["image"])).mode == "CMYK"
    decoded = transforms.DecodeExample().map(record)["image"]
    assert decoded.ndim == 3 and decoded.shape[2] == 3 and decoded.std() > 10


def test_validation_split_through_eval_batches(config):
    expected = {
        f"ILSVRC2012_val_{i:08d}.JPEG": label_of(s)
        for i, s in enumerate(fake_imagenet.validation_synsets(NUM_VAL), start=1)
    }
    seen = {}
    counts = []
    for index in range(3):
        batches = list(
            images.eval_batches(
                config, per_process_batch=2, process_index=index, process_count=3, keep_file_name=True
            )
        )
        counts.append(len(batches))
        for b in batches:
            assert b["image"].shape == (2, 32, 32, 3)
            for name, label in zip(b["file_name"][b["mask"]], b["label"][b["mask"]]):
                assert name not in seen
                seen[name] = int(label)
    assert counts == [2, 2, 2]  # shares of 3, 3, 2 examples
    assert seen == expected


def test_tfrecord_copy_is_rejected_with_instructions(tmp_path):
    builder = tfds.builder("vdt_shapes/tiny", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    config = ml_collections.ConfigDict(
        dict(name="vdt_shapes/tiny", data_dir=str(tmp_path), train_split="train", eval_split="validation")
    )
    with pytest.raises(ValueError, match=r"stored as \['tfrecord'\].*file_format='array_record'"):
        images.prepare_dataset(config)


def test_pretraining_trains_and_evaluates_on_prepared_imagenet(config, tmp_path):
    from tests.fakes import tiny_config
    from vdt_jax.pretrain.vdt_classification import VDTClassificationTask
    from vdt_jax.train import loop

    run_config = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
    run_config.batch_size = 8
    run_config.eval_batch_size = 8
    run_config.data = config
    metrics = loop.train_and_evaluate(run_config, str(tmp_path), VDTClassificationTask(run_config))
    assert metrics["num_examples"] == NUM_VAL  # every validation image counted once
    assert 0.0 <= metrics["top1"] <= 1.0 and np.isfinite(metrics["loss"])
    assert (tmp_path / "checkpoints" / "2").is_dir()

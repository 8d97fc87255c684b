"""A miniature ImageNet in the real ILSVRC2012 tar layout, for tests.

`write_fake_imagenet` writes the two files TFDS's `imagenet2012` builder reads
from its manual directory:

  ILSVRC2012_img_train.tar   one tar per synset, `n01440764.tar`, each holding
                             JPEGs `n01440764_<i>.JPEG`
  ILSVRC2012_img_val.tar     flat JPEGs `ILSVRC2012_val_00000001.JPEG`, ...

The builder labels validation images by zipping their sorted names with the
lines of TFDS's `validation_labels.txt`, so validation image i (1-based) has
the synset on line i of that file. The training synsets are the distinct
synsets of those first `num_val` lines, topped up from the following lines, so
every validation label is also a training class.

Images are `vdt_shapes` scenes (the shape is chosen by the synset, so a model
can learn them) resized to random non-square sizes. The first training image of
the first synset is stored as a grayscale JPEG and the second as a CMYK JPEG,
as a few real ImageNet images are.

Preparing the real builder from this directory needs TensorFlow:

    write_fake_imagenet(manual_dir, num_classes=8, images_per_class=4, num_val=8, seed=0)
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vdt_jax.data import shapes

_VALIDATION_LABELS = "datasets/imagenet2012/validation_labels.txt"


def _validation_label_lines() -> list[str]:
    return tfds.core.tfds_path(_VALIDATION_LABELS).read_text().split()


def validation_synsets(num_val: int) -> list[str]:
    """The synset of each fake validation image, in file-name order."""
    lines = _validation_label_lines()
    if not 0 < num_val <= len(lines):
        raise ValueError(f"num_val must be in [1, {len(lines)}], got {num_val}")
    return lines[:num_val]


def train_synsets(num_classes: int, num_val: int) -> list[str]:
    """The synsets of the fake training set, sorted.

    Raises:
      ValueError: the first `num_val` validation images already span more than
        `num_classes` synsets.
    """
    chosen: list[str] = []
    for synset in _validation_label_lines():
        if synset not in chosen:
            chosen.append(synset)
        if len(chosen) == num_classes:
            break
    needed = set(validation_synsets(num_val))
    if not needed <= set(chosen):
        raise ValueError(
            f"the first {num_val} validation images span {len(needed)} synsets, more than "
            f"num_classes={num_classes}: raise num_classes or lower num_val"
        )
    return sorted(chosen)


def write_fake_imagenet(
    manual_dir: str | os.PathLike,
    *,
    num_classes: int,
    images_per_class: int,
    num_val: int,
    seed: int,
) -> None:
    """Writes ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into `manual_dir`.

    Args:
      manual_dir: directory to write to (created if missing).
      num_classes: number of training synsets.
      images_per_class: training JPEGs per synset (at least 2: one grayscale
        and one CMYK image go into the first synset).
      num_val: validation JPEGs.
      seed: seeds the image content; the same arguments give the same files.
    """
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be at least 2, got {images_per_class}")
    synsets = train_synsets(num_classes, num_val)
    class_of = {synset: i for i, synset in enumerate(synsets)}
    rng = np.random.default_rng(seed)
    os.makedirs(manual_dir, exist_ok=True)

    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as train_tar:
        for synset in synsets:
            members = {}
            for i in range(images_per_class):
                mode = {0: "L", 1: "CMYK"}.get(i, "RGB") if synset == synsets[0] else "RGB"
                members[f"{synset}_{i}.JPEG"] = _fake_jpeg(rng, class_of[synset], mode)
            _add_member(train_tar, f"{synset}.tar", _tar_bytes(members))

    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val_tar:
        for i, synset in enumerate(validation_synsets(num_val), start=1):
            _add_member(val_tar, f"ILSVRC2012_val_{i:08d}.JPEG", _fake_jpeg(rng, class_of[synset], "RGB"))


def _fake_jpeg(rng: np.random.Generator, class_index: int, mode: str) -> bytes:
    """A JPEG of a vdt_shapes scene of shape class_index % 10, random non-square size."""
    image = shapes.render_shape(rng, class_index % len(shapes.CLASS_NAMES), 64)
    width, height = (int(v) for v in rng.integers(40, 97, size=2))
    image = image.resize((width, height), Image.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            _add_member(tar, name, data)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # Same bytes on every run.
    tar.addfile(info, io.BytesIO(data))

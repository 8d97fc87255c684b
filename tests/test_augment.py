"""Tests of vdt_jax.finetune.augment: crops and augmentations of volumes and label maps."""

import numpy as np

from vdt_jax.finetune import augment


def test_augmentations_move_image_and_label_together():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 6, 6, 1)).astype(np.float32)
    transform = augment.Augment(flip_axes=(0, 1, 2), rotate_planes=augment.ALL_PLANES)
    outputs = set()
    for seed in range(8):
        out = transform({"image": image, "label": (image[..., 0] > 0).astype(np.uint8)}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["label"], out["image"][..., 0] > 0)
        outputs.add(out["image"].tobytes())
    assert len(outputs) > 4  # the draws differ


def test_foreground_crops_find_small_structures():
    volume = np.zeros((20, 30, 30, 1), np.float32)
    label = np.zeros((20, 30, 30), np.uint8)
    label[15:17, 3:5, 25:27] = 2  # a tiny lesion far from the centre
    sample = {"volume": volume, "label_map": label, "foreground": [np.zeros((0, 3), np.int32), np.argwhere(label == 2)], "pad_value": -1.0}
    always = augment.RandomForegroundCrop((8, 8, 8), 1.0, augment.Augment())
    never = augment.RandomForegroundCrop((8, 8, 8), 0.0, augment.Augment())
    hits = [(always.random_map(sample, np.random.default_rng(s))["label"] == 2).any() for s in range(20)]
    misses = [(never.random_map(sample, np.random.default_rng(s))["label"] == 2).any() for s in range(20)]
    assert all(hits) and sum(misses) < 10
    assert always.random_map(sample, np.random.default_rng(0))["image"].shape == (8, 8, 8, 1)

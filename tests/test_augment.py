"""Tests of vdt_jax.finetune.augment: crops and augmentations of volumes and label maps."""

import numpy as np
import pytest

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


def test_one_axis_flips_draw_no_flip_and_each_axis_a_quarter_of_the_time():
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    outcomes = {"none": image, **{axis: np.flip(image, axis) for axis in (0, 1, 2)}}
    transform = augment.Augment(flip_axes=(0, 1, 2), flip_mode="one_axis")
    counts = dict.fromkeys(outcomes, 0)
    rng = np.random.default_rng(0)
    for _ in range(4000):
        out = transform({"image": image}, rng)["image"]
        matches = [name for name, expected in outcomes.items() if np.array_equal(out, expected)]
        assert len(matches) == 1  # never two axes flipped at once
        counts[matches[0]] += 1
    # Each of the 4 outcomes has probability 1/4 (binomial sd ~27 of 4000 draws).
    assert all(abs(c - 1000) < 110 for c in counts.values()), counts
    independent = augment.Augment(flip_axes=(0, 1, 2))
    flipped_twice = sum(
        sum(not np.array_equal(independent({"image": image}, rng)["image"], o) for o in outcomes.values()) == 4
        for _ in range(400)
    )
    assert flipped_twice > 100  # the default flips several axes at once (1/2 of draws)
    with pytest.raises(ValueError, match="data.flip_mode must be one of"):
        augment.Augment(flip_mode="sometimes")

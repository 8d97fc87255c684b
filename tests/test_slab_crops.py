"""Tests of vdt_jax.finetune.slab_crops: the reference's depth samplers and the in-plane rescale-and-crop."""

import ml_collections
import numpy as np
import pytest

from configs import finetune_default
from vdt_jax.finetune import augment, slab_crops


def depth_ramp(shape):
    """A volume whose voxels hold their own depth index, and an empty label map."""
    volume = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None, None], (*shape, 1)).copy()
    return volume, np.zeros(shape, np.uint8)


def test_random_z_crop_starts_inside_the_labelled_slices_and_redraws_when_one_class_dominates():
    volume, label = depth_ramp((60, 8, 8))
    label[20:40, 2:6, 2:6] = 1  # labelled slices 20..39; inside them the organ fills 1/4 of each slice
    sample = {"volume": volume, "label_map": label, "pad_value": 0.0}
    plain = slab_crops.SlabCrop((8, 8, 8), "random_z_crop", augment.Augment())
    starts = [int(plain.random_map(sample, np.random.default_rng(s))["image"][0, 0, 0, 0]) for s in range(300)]
    # mmseg's RandomZCrop: the first draw is uniform in [z_min, z_max - depth] = [20, 31].
    assert set(starts) == set(range(20, 32))
    # With cat_max_ratio 0.7 a slab whose background fills >= 70% is redrawn anywhere in depth: an 8-slice
    # slab with all 8 slices labelled is 75% background, so every first draw is rejected.
    strict = slab_crops.SlabCrop((8, 8, 8), "random_z_crop", augment.Augment(), max_class_ratio=0.7)
    redrawn = [int(strict.random_map(sample, np.random.default_rng(s))["image"][0, 0, 0, 0]) for s in range(300)]
    assert min(redrawn) < 20 and max(redrawn) > 31  # re-draws ignore the labelled range
    assert len(set(redrawn)) > 30


def test_key_slice_slabs_centre_on_a_key_and_repeat_the_edge_slices():
    volume, label = depth_ramp((40, 6, 6))
    label[30:35] = 1
    sample = {"volume": volume, "label_map": label, "pad_value": -5.0}
    inside = slab_crops.SlabCrop((32, 6, 6), "key_slice", augment.Augment(), foreground_probability=1.0)
    for seed in range(50):
        depths = inside.random_map(sample, np.random.default_rng(seed))["image"][:, 0, 0, 0]
        key = int(np.round(depths[15]))  # the slab is key - 15 .. key + 16
        assert 30 <= key <= 34
        np.testing.assert_array_equal(depths, np.clip(np.arange(key - 15, key + 17), 0, 39))
    anywhere = slab_crops.SlabCrop((32, 6, 6), "key_slice", augment.Augment(), foreground_probability=0.0)
    keys = {int(anywhere.random_map(sample, np.random.default_rng(s))["image"][15, 0, 0, 0]) for s in range(400)}
    assert min(keys) <= 3 and max(keys) >= 36  # uniform over the whole depth


def test_rescaled_crop_equals_resizing_whole_slices_then_cropping():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(3, 20, 16, 1)).astype(np.float32)
    label = rng.integers(0, 4, (3, 20, 16)).astype(np.uint8)
    depth_index = np.array([2, 0, 1])
    for scaled, offset, crop in (((26, 21), (3, 5), (12, 10)), ((13, 10), (1, 0), (12, 10)), ((9, 7), (0, 0), (12, 10))):
        image = slab_crops.rescaled_crop(volume, depth_index, scaled, offset, crop, linear=True, pad_value=-9.0)
        labels = slab_crops.rescaled_crop(label, depth_index, scaled, offset, crop, linear=False, pad_value=0)
        # PyTorch's bilinear (align_corners=False, no antialiasing) and nearest are OpenCV's INTER_LINEAR / INTER_NEAREST.
        slices = torch.from_numpy(volume[depth_index, ..., 0][:, None])
        full = torch.nn.functional.interpolate(slices, size=scaled, mode="bilinear", align_corners=False)[:, 0].numpy()
        full_labels = torch.nn.functional.interpolate(
            torch.from_numpy(label[depth_index][:, None].astype(np.float32)), size=scaled, mode="nearest"
        )[:, 0].numpy()
        h, w = min(crop[0], scaled[0]), min(crop[1], scaled[1])
        region = np.s_[:, offset[0] : offset[0] + h, offset[1] : offset[1] + w]
        np.testing.assert_allclose(image[:, :h, :w, 0], full[region], atol=1e-5)
        np.testing.assert_array_equal(labels[:, :h, :w], full_labels[region])
        assert image.shape == (3, *crop, 1) and labels.shape == (3, *crop)
        assert (image[:, h:] == -9.0).all() and (labels[:, :, w:] == 0).all()  # padded at the far edges


def test_rescale_factor_follows_the_longer_side_and_keeps_the_aspect_ratio():
    assert slab_crops.rescaled_shape((512, 512), 512, 0.8) == (409, 409)  # target int(512 * 0.8) = 409
    assert slab_crops.rescaled_shape((400, 500), 512, 1.0) == (410, 512)
    volume, label = depth_ramp((8, 40, 40))
    crop = slab_crops.SlabCrop(
        (4, 16, 16), "random_z_crop", augment.Augment(), rescale_size=40, rescale_ratio=(0.5, 0.5)
    )
    out = crop.random_map({"volume": volume, "label_map": label, "pad_value": 0.0}, np.random.default_rng(0))
    assert out["image"].shape == (4, 16, 16, 1) and out["label"].shape == (4, 16, 16)


def test_train_crop_reads_the_config_and_rejects_bad_values():
    data = finetune_default.get_config("segmentation").data
    assert isinstance(slab_crops.train_crop(data, augment.Augment()), augment.RandomForegroundCrop)
    data.crop_sampler, data.rescale_size, data.rescale_ratio = "key_slice", 512, (0.8, 1.2)
    crop = slab_crops.train_crop(data, augment.Augment())
    assert isinstance(crop, slab_crops.SlabCrop) and crop.rescale_ratio == (0.8, 1.2)
    for field, value, message in (
        ("crop_sampler", "middle", "data.crop_sampler must be one of"),
        ("rescale_ratio", (1.2, 0.8), "data.rescale_ratio must be"),
    ):
        bad = ml_collections.ConfigDict(data.to_dict())
        bad[field] = value
        with pytest.raises(ValueError, match=message):
            slab_crops.train_crop(bad, augment.Augment())
    data.crop_sampler = "foreground"
    with pytest.raises(ValueError, match="data.rescale_size applies to"):
        slab_crops.train_crop(data, augment.Augment())

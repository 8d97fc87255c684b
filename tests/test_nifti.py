"""NIfTI reading and writing: canonical axes, spacing, scaling, resampling, orientation round trips, errors."""

from __future__ import annotations

import os

import ml_collections
import nibabel as nib
import numpy as np
import pytest

from configs import finetune_default
from vdt_jax.finetune import nifti
from vdt_jax.finetune.volume_cache import Preprocessing


def save(path, data, affine, *, slope=1.0, inter=0.0, dtype=None):
    image = nib.Nifti1Image(data if dtype is None else data.astype(dtype), affine)
    image.header.set_slope_inter(slope, inter)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return str(path)


def ras_and_lps_twins(tmp_path, data_xyz, spacing=(0.8, 0.9, 2.5)):
    """The same scan stored RAS and LPS (x and y axes reversed, affine to match)."""
    ras = np.diag([*spacing, 1.0])
    ras[:3, 3] = (10.0, -20.0, 30.0)
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -spacing[0], -spacing[1]
    lps[:3, 3] = ras[:3, :3] @ (np.array(data_xyz.shape[:3]) - 1) * [1, 1, 0] + ras[:3, 3]
    return (
        save(tmp_path / "ras.nii.gz", data_xyz, ras, dtype=np.int16),
        save(tmp_path / "lps.nii.gz", data_xyz[::-1, ::-1], lps, dtype=np.int16),
    )


def test_scaling_canonical_axes_and_spacing(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (x, y, z) on disk
    affine = np.diag([-0.7, -0.8, 2.0, 1.0])  # LPS
    path = save(tmp_path / "ct.nii.gz", raw, affine, slope=2.0, inter=-1024.0)
    volume, geometry = nifti.load_image(path)
    assert volume.shape == (6, 5, 4, 1) and volume.dtype == np.float32
    hu = raw * 2.0 - 1024.0
    # Model axes are (z, y, x) of the canonical RAS array: x and y reversed for an LPS file.
    np.testing.assert_array_equal(volume[..., 0], hu[::-1, ::-1, :].transpose(2, 1, 0))
    assert geometry.spacing == pytest.approx((0.7, 0.8, 2.0))
    assert geometry.axcodes == "LPS" and geometry.shape == (4, 5, 6)
    assert nifti.model_spacing(geometry) == pytest.approx((2.0, 0.8, 0.7))


def test_ras_lps_and_permuted_files_give_the_same_model_array(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, (6, 7, 5)).astype(np.int16)
    ras_path, lps_path = ras_and_lps_twins(tmp_path, data)
    ras, ras_geometry = nifti.load_image(ras_path)
    lps, lps_geometry = nifti.load_image(lps_path)
    np.testing.assert_array_equal(ras, lps)
    np.testing.assert_allclose(ras_geometry.canonical_affine, lps_geometry.canonical_affine, atol=1e-6)
    # Axes stored in another order (z, x, y) with the affine permuted to match.
    permuted = save(tmp_path / "zxy.nii.gz", data.transpose(2, 0, 1), nib.load(ras_path).affine[:, [2, 0, 1, 3]])
    np.testing.assert_array_equal(nifti.load_image(permuted)[0], ras)


def test_intensity_window_and_normalisation():
    hu = np.array([-2000.0, -160.0, 40.0, 240.0, 3000.0], np.float32)
    window = nifti.Intensity(hu_window=(40.0, 400.0), normalize="window")
    np.testing.assert_allclose(window.apply(hu), [0.0, 0.0, 0.5, 1.0, 1.0])
    clipped = nifti.Intensity(hu_window=(40.0, 400.0), normalize="none")
    np.testing.assert_allclose(clipped.apply(hu), [-160.0, -160.0, 40.0, 240.0, 240.0])
    fixed = nifti.Intensity(normalize="fixed", mean_std=(99.0, 77.0))
    np.testing.assert_allclose(fixed.apply(hu), (hu - 99.0) / 77.0, rtol=1e-6)
    zscore = nifti.Intensity(normalize="zscore").apply(np.random.default_rng(0).normal(5, 3, (4, 4, 4, 2)))
    np.testing.assert_allclose(zscore.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(zscore.std(axis=(0, 1, 2)), 1, atol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"normalize": "minmax"}, r"data.normalize must be one of \('window', 'fixed', 'zscore', 'none'\)"),
        ({"normalize": "window", "hu_window": ()}, r"set data.hu_window=\(centre, width\)"),
        ({"hu_window": (40.0, -1.0)}, r"data.hu_window must be \(\) or \(centre, width>0\)"),
        ({"normalize": "fixed", "normalize_mean_std": (99.0, 0.0)}, r"normalize_mean_std must be \(mean, std>0\)"),
    ],
)
def test_intensity_config_errors_name_the_field(fields, message):
    config = ml_collections.ConfigDict({"hu_window": (40.0, 400.0), "normalize": "window", "normalize_mean_std": (0.0, 1.0)})
    config.update(fields)
    with pytest.raises(ValueError, match=message):
        nifti.Intensity.from_config(config)


def test_resampling_to_a_target_spacing_and_back(tmp_path):
    data = np.zeros((8, 8, 4), np.int16)
    data[2:6, 2:6, 1:3] = 100
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    image_path = save(tmp_path / "img.nii.gz", data, affine)
    label_path = save(tmp_path / "lab.nii.gz", (data > 0).astype(np.uint8), affine)
    volume, geometry = nifti.load_image(image_path, target_spacing=(2.0, 2.0, 1.5))
    assert volume.shape == (8, 4, 4, 1) and geometry.model_shape == (8, 4, 4)
    assert nifti.model_spacing(geometry) == pytest.approx((1.5, 2.0, 2.0))
    label, source_label = nifti.load_label(label_path, geometry, num_classes=2)
    assert label.shape == (8, 4, 4) and source_label.shape == (4, 8, 8)
    np.testing.assert_array_equal(nifti.label_to_file(source_label, geometry), data > 0)
    # A model-space prediction goes back to the file's grid and axis order.
    assert nifti.label_to_file(label, geometry).shape == (8, 8, 4)
    # A world point maps to its voxel in model space, with and without resampling.
    world = affine @ [5, 2, 3, 1]
    plain = nifti.load_image(image_path)[1]
    np.testing.assert_allclose(nifti.world_to_model_index(world[:3], plain), (3, 2, 5), atol=1e-9)
    np.testing.assert_allclose(nifti.world_to_model_index(world[:3], geometry), (6.5, 0.75, 2.25), atol=1e-9)


def test_a_zero_target_spacing_keeps_that_axis(tmp_path):
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    image_path = save(tmp_path / "img.nii.gz", data, np.diag([0.7, 0.8, 2.5, 1.0]))
    volume, geometry = nifti.load_image(image_path, target_spacing=(0.0, 0.0, 1.0))  # depth only, as LiTS
    assert geometry.model_shape == (10, 5, 6) and nifti.model_spacing(geometry) == pytest.approx((1.0, 0.8, 0.7))
    # In-plane voxels are untouched: the first and last depth slices are the file's own (edges replicated).
    np.testing.assert_array_equal(volume[0, ..., 0], data[:, :, 0].T)
    np.testing.assert_array_equal(volume[-1, ..., 0], data[:, :, -1].T)
    config = finetune_default.get_config().data
    config.target_spacing = (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="each > 0 or 0 to keep that axis"):
        Preprocessing.from_config(config, 2)


def test_prediction_written_in_the_source_orientation(tmp_path):
    data = np.random.default_rng(1).integers(0, 3, (6, 7, 5)).astype(np.int16)
    _, lps_path = ras_and_lps_twins(tmp_path, data)
    _, geometry = nifti.load_image(lps_path)
    stored = np.asarray(nib.load(lps_path).dataobj).astype(np.uint8)
    model_space = nifti.to_model_axes(stored, geometry)
    out = tmp_path / "out" / "pred.nii.gz"
    nifti.save_label(str(out), model_space, geometry)
    written = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(written.dataobj), stored)
    np.testing.assert_array_equal(written.affine, nib.load(lps_path).affine)
    assert written.get_data_dtype() == np.uint8
    assert int(written.header["sform_code"]) == 1 and int(written.header["qform_code"]) == 1
    assert os.listdir(out.parent) == ["pred.nii.gz"]  # no temporary left behind


def test_four_d_with_a_singleton_axis_is_accepted_and_channels_are_checked(tmp_path):
    data = np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32)
    singleton = save(tmp_path / "s.nii.gz", data[..., None], np.eye(4))
    np.testing.assert_array_equal(nifti.load_image(singleton)[0], nifti.to_model_axes(data[..., None], nifti.load_image(singleton)[1]))
    two = save(tmp_path / "two.nii.gz", np.stack([data, data], -1), np.eye(4))
    assert nifti.load_image(two, channels=2)[0].shape == (6, 5, 4, 2)
    with pytest.raises(nifti.NiftiError, match=r"two\.nii\.gz: has 2 values on its 4th axis.*expected 1 channel"):
        nifti.load_image(two)


@pytest.mark.parametrize(
    "shape, message",
    [((4, 5), r"has 2 dimensions"), ((4, 5, 6, 2, 3), r"has 5 dimensions")],
)
def test_wrong_number_of_dimensions(tmp_path, shape, message):
    path = save(tmp_path / "bad.nii.gz", np.zeros(shape, np.float32), np.eye(4))
    with pytest.raises(nifti.NiftiError, match=rf"bad\.nii\.gz: {message}"):
        nifti.load_image(path)


def test_missing_and_non_finite_files(tmp_path):
    with pytest.raises(nifti.NiftiError, match=r"nowhere\.nii\.gz: NIfTI file not found"):
        nifti.load_image(str(tmp_path / "nowhere.nii.gz"))
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    path = save(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(nifti.NiftiError, match=r"nan\.nii\.gz: 2 voxel\(s\) are NaN or infinite \(first at voxel \(0, 0, 0\)\)"):
        nifti.load_image(path)


def test_label_checks(tmp_path):
    image = save(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.int16), np.eye(4))
    _, geometry = nifti.load_image(image)
    cases = {
        "shape.nii.gz": (np.zeros((4, 5, 7), np.uint8), np.eye(4), r"label shape \(4, 5, 7\) differs from its image"),
        "affine.nii.gz": (np.zeros((4, 5, 6), np.uint8), np.diag([1, 1, 2, 1.0]), r"label affine differs from its image"),
        "range.nii.gz": (np.full((4, 5, 6), 3, np.uint8), np.eye(4), r"label values \[3\] are outside the 3 declared classes \[0, 2\]"),
        "float.nii.gz": (np.full((4, 5, 6), 0.5, np.float32), np.eye(4), r"label map holds non-integer values"),
        "dims.nii.gz": (np.zeros((4, 5, 6, 2), np.uint8), np.eye(4), r"a label map must be 3D"),
    }
    for name, (data, affine, message) in cases.items():
        path = save(tmp_path / name, data, affine)
        with pytest.raises(nifti.NiftiError, match=rf"{name.replace('.', chr(92) + '.')}: {message}"):
            nifti.load_label(path, geometry, num_classes=3)
    merged = save(tmp_path / "merge.nii.gz", np.full((4, 5, 6), 2, np.uint8), np.eye(4))
    label, _ = nifti.load_label(merged, geometry, num_classes=2, label_map={2: 1})
    assert np.all(label == 1)

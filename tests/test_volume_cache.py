"""Tests of vdt_jax.finetune.volume_cache: preprocessed volumes and the crops their sources serve."""

import nibabel as nib
import numpy as np

from tests.finetune_fakes import write_lps_twin
from vdt_jax.finetune import augment, manifests, nifti, volume_cache


def test_world_centres_crop_the_same_voxels_in_ras_and_lps_files(tmp_path):
    data = np.zeros((12, 10, 8), np.int16)
    data[7, 3, 5] = 1000  # a bright voxel at a known place
    affine = np.diag([0.7, 0.8, 1.5, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 10.0)
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "ras.nii.gz")
    write_lps_twin(str(tmp_path / "ras.nii.gz"), str(tmp_path / "lps.nii.gz"))
    world = tuple(affine @ [7, 3, 5, 1])[:3]
    rows = [manifests.Row(str(tmp_path / n), 0, "train", world, n) for n in ("ras.nii.gz", "lps.nii.gz")]
    cache = volume_cache.VolumeCache(str(tmp_path / "cache"), volume_cache.Preprocessing(1, (1.4, 1.6, 1.5), nifti.Intensity(), 2))
    source = volume_cache.ClassificationSource(rows, [cache.get(r.image) for r in rows], "test")
    for i in range(2):
        crop = augment.CentredCrop((5, 5, 5)).map(source[i])["image"][..., 0]
        assert np.unravel_index(crop.argmax(), crop.shape) == (2, 2, 2)

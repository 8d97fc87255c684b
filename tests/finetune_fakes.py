"""Tiny fine-tuning configs and datasets for the tests (generated NIfTI files, small widths, few steps)."""

from __future__ import annotations

import contextlib
import os

import jax
import ml_collections
import nibabel as nib
import numpy as np

import configs.finetune_default
from tests.fakes import override


def tiny_finetune_config(task: str, data_path: str, cache_dir: str, **overrides) -> ml_collections.ConfigDict:
    config = configs.finetune_default.get_config(task)
    config.batch_size = 8  # one example per fake device
    config.eval_batch_size = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 2
    config.init_from = ""
    config.model.widths = (8, 8, 16, 16)
    config.model.conv_impl = "conv3d"  # compiles faster than depth_taps; speed is irrelevant at these sizes
    config.data.synthetic = ""
    config.data.path = data_path
    config.data.cache_dir = cache_dir
    if task == "segmentation":
        config.data.crop_size = (8, 12, 12)
        config.data.samples_per_case = 2
        config.eval.window = (8, 12, 12)
        config.eval.stride = (4, 6, 6)
        config.eval.figure_slices = 2
    else:
        config.data.target_spacing = ()
        config.data.crop_size = (12, 12, 12)
        config.data.max_shift = 2
    return override(config, **overrides)


@contextlib.contextmanager
def persistent_compilation_cache(directory: str):
    """Cache XLA executables on disk for the block: a resumed run reuses the first run's compilations.

    Each `train_and_evaluate` jits fresh closures, so without this the resume
    tests would compile everything twice (XLA:CPU takes ~10 s per program here).
    """
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


def write_lps_twin(ras_path: str, out_path: str) -> str:
    """The same scan as the RAS file `ras_path`, stored LPS (x and y reversed, affine to match)."""
    image = nib.load(ras_path)
    affine = image.affine.copy()
    shape = np.asarray(image.shape[:3])
    affine[:3, 3] = image.affine[:3, :3] @ ((shape - 1) * [1, 1, 0]) + image.affine[:3, 3]
    affine[:3, :2] *= -1
    raw = np.asarray(image.dataobj.get_unscaled())[::-1, ::-1]
    twin = nib.Nifti1Image(np.ascontiguousarray(raw), affine, image.header)
    twin.header.set_slope_inter(image.dataobj.slope, image.dataobj.inter)  # loaded headers keep it in the proxy
    twin.set_qform(affine, code=1)
    twin.set_sform(affine, code=1)
    nib.save(twin, out_path)
    assert "".join(nib.aff2axcodes(affine)) == "LPS"
    return out_path


def file_stem(path: str) -> str:
    return os.path.basename(path).split(".")[0]

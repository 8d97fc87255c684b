"""Test set-up: 8 fake CPU devices (before JAX starts) and small shared helpers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Entry points run by the tests must not fill the user's compilation cache.
os.environ.setdefault("VDT_JAX_COMPILE_CACHE", "off")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny generated `vdt_shapes` dataset (32x32, 300 train / 100 validation), prepared once per session."""
    from tests.image_fakes import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def segmentation_dataset(tmp_path_factory):
    """A tiny MSD dataset: 4 training cases and 2 evaluation cases, one RAS scan and its LPS twin."""
    import json

    import nibabel as nib

    from tests.finetune_fakes import write_lps_twin
    from vdt_jax.finetune import synthetic

    folder = str(tmp_path_factory.mktemp("msd"))
    synthetic.write_segmentation_dataset(folder, num_train=4, num_val=1, shape=(24, 24, 10), seed=3)
    path = os.path.join(folder, "dataset.json")
    with open(path) as f:
        data = json.load(f)
    ras = data["validation"][0]
    assert "".join(nib.aff2axcodes(nib.load(os.path.join(folder, ras["image"])).affine)) == "RAS"
    for key in ("image", "label"):
        write_lps_twin(os.path.join(folder, ras[key]), os.path.join(folder, ras[key].replace("case_004", "twin_lps")))
    data["validation"].append({k: v.replace("case_004", "twin_lps") for k, v in ras.items()})
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.fixture(scope="session")
def segmentation_run(segmentation_dataset, tmp_path_factory):
    """A UNet trained 4 steps, then resumed to 6, by the real loop (predictions written at each evaluation).

    Returns (workdir, first metrics, final metrics, {case: model-space labels of the last evaluation}).
    """
    from tests.finetune_fakes import persistent_compilation_cache, tiny_finetune_config
    from vdt_jax.finetune import make_task
    from vdt_jax.finetune.segmentation import SegmentationTask
    from vdt_jax.train import loop

    workdir = str(tmp_path_factory.mktemp("seg_run"))
    cache = str(tmp_path_factory.mktemp("cache"))
    captured = {}
    original = SegmentationTask._finish_case

    def capture(self, case, stitched):
        captured[case] = stitched.labels
        return original(self, case, stitched)

    SegmentationTask._finish_case = capture
    try:
        with persistent_compilation_cache(xla_cache_dir(tmp_path_factory)):
            config = tiny_finetune_config("segmentation", segmentation_dataset, cache)
            first = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
            config = tiny_finetune_config("segmentation", segmentation_dataset, cache, num_train_steps=6)
            final = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
    finally:
        SegmentationTask._finish_case = original
    return workdir, first, final, captured


@pytest.fixture(scope="session")
def classification_manifest(tmp_path_factory):
    from vdt_jax.finetune import synthetic

    folder = str(tmp_path_factory.mktemp("nodules"))
    synthetic.write_classification_dataset(folder, num_train=8, num_val=6, shape=(20, 20, 14), seed=5)
    return os.path.join(folder, "manifest.csv")


@pytest.fixture(scope="session")
def classification_run(classification_manifest, tmp_path_factory):
    """A 3D ResNet trained 4 steps, then resumed to 6; returns (workdir, first metrics, final metrics, final task)."""
    from tests.finetune_fakes import persistent_compilation_cache, tiny_finetune_config
    from vdt_jax.finetune import make_task
    from vdt_jax.train import loop

    workdir = str(tmp_path_factory.mktemp("cls_run"))
    cache = str(tmp_path_factory.mktemp("cache"))
    with persistent_compilation_cache(xla_cache_dir(tmp_path_factory)):
        config = tiny_finetune_config("classification", classification_manifest, cache)
        first = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
        # The resumed run also draws the reference's LIDC flips and reports its threshold-tuned metrics.
        overrides = {"data.flip_mode": "one_axis", "eval.tuned_threshold": True}
        config = tiny_finetune_config("classification", classification_manifest, cache, num_train_steps=6, **overrides)
        task = make_task(config, workdir)
        final = loop.train_and_evaluate(config, workdir, task)
    return workdir, first, final, task


def xla_cache_dir(tmp_path_factory) -> str:
    """One persistent XLA compilation cache for the whole session (fine-tuning runs and predict share programs)."""
    folder = tmp_path_factory.getbasetemp() / "xla_cache"
    folder.mkdir(exist_ok=True)
    return str(folder)

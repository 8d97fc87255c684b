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

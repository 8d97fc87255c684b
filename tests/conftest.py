"""Test set-up: 8 fake CPU devices (before JAX starts) and small shared helpers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Entry points run by the tests must not fill the user's compilation cache.
os.environ.setdefault("VDT_JAX_COMPILE_CACHE", "off")

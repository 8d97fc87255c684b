"""Where should the variable dimension transform run? Host numpy vs inside the jitted step.

Host placement: numpy shuffles, normalises and reshapes to float32 volumes,
which are then copied to the device. Device placement: the host copies uint8
images and the transform runs on the device (what training does).
"""

from __future__ import annotations

import jax
import numpy as np

from vdt_jax import vdt
from vdt_jax.benchmark.timing import time_interleaved


def measure(batch: int, image_size: int, rounds: int) -> dict:
    """Milliseconds per batch and bytes moved for both placements."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    on_device = jax.jit(vdt.images_to_volumes)
    key = jax.random.key(0)

    def host() -> None:
        jax.block_until_ready(jax.device_put(vdt.images_to_volumes_numpy(images, rng)))

    def device() -> None:
        jax.block_until_ready(on_device(jax.device_put(images), key))

    stats = time_interleaved({"host": host, "device": device}, rounds)
    return {
        "batch": batch,
        "host_ms": stats["host"].median * 1e3,
        "device_ms": stats["device"].median * 1e3,
        "host_bytes": images.size * 4,
        "device_bytes": images.size,
    }

"""Where should the variable dimension transform run? Host numpy vs inside the jitted step.

    python -m vdt_jax.benchmarks.vdt_placement --batch=256 --image_size=224

Host placement: numpy shuffles, normalises and reshapes to float32 volumes, which
are then copied to the device. Device placement: the host copies uint8 images and
the transform runs on the device. Prints per-batch time and bytes moved for both.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import flags

from vdt_jax import entrypoint, vdt
from vdt_jax.benchmarks.common import time_interleaved

flags.DEFINE_integer("batch", 256, "Images per batch.")
flags.DEFINE_integer("image_size", 224, "Image height and width.")
flags.DEFINE_integer("repeats", 10, "Timed repeats.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (FLAGS.batch, FLAGS.image_size, FLAGS.image_size, 3), dtype=np.uint8)
    on_device = jax.jit(vdt.images_to_volumes)
    key = jax.random.key(0)

    def host():
        return jax.device_put(vdt.images_to_volumes_numpy(images, rng))

    def device():
        return on_device(jax.device_put(images), key)

    seconds = time_interleaved({"host": host, "device": device}, FLAGS.repeats)
    float_bytes, uint8_bytes = images.size * 4, images.size
    print(f"VDT of {FLAGS.batch} images {FLAGS.image_size}x{FLAGS.image_size} on {jax.devices()[0].platform}:")
    print(f"  host numpy + copy float32: {seconds['host'] * 1000:7.1f} ms/batch, {float_bytes / 2**20:.1f} MiB moved")
    print(f"  copy uint8 + jitted VDT  : {seconds['device'] * 1000:7.1f} ms/batch, {uint8_bytes / 2**20:.1f} MiB moved")
    print(f"  ratio host/device: {seconds['host'] / seconds['device']:.2f}x")


if __name__ == "__main__":
    entrypoint.run(main)

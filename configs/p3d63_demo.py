"""The built-in demo (configs/default.py) with a narrow MP3D-63 instead of the 3D ResNet-10.

    python -m vdt_jax.pretrain --config=configs/p3d63_demo.py --workdir=workdirs/pretrain_p3d63_demo

Demo-sized variant of configs/imagenet_p3d63.py: the same pseudo-3D network
(bottleneck blocks 3, 4, 6, 3 in the P3D-A/B/C patterns, depth never pooled)
at widths 8-64 (stage outputs 32-256 channels, 0.44M parameters with the
10-way classifier), VDT pre-training on the generated `vdt_shapes` dataset.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.arch = "mp3d"
    config.model.p3d_variant = "63"
    config.model.widths = (8, 16, 32, 64)
    return config

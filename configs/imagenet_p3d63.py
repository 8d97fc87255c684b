"""VDT pre-training of the pseudo-3D detection backbone MP3D-63 on ImageNet-1k.

    python -m vdt_jax.pretrain --config=configs/imagenet_p3d63.py --workdir=$WORKDIR \
        --config.data.data_dir=$TFDS_DATA_DIR

The recipe of configs/imagenet_r3d18.py (100 epochs, global batch 256, SGD lr
0.1 momentum 0.9 wd 1e-4, cosine to 0, label smoothing 0.1) with the MP3D-63
backbone of the DeepLesion detector (vdt_jax.models.p3d: bottleneck blocks
3, 4, 6, 3 whose 3x3x3 convs are split into 1x3x3 + 3x1x1 in the P3D-A/B/C
patterns; 27,281,728 backbone parameters, +2,049,000 for the 1000-way
classifier). MP3D never pools depth, so the 3-slice VDT volume keeps depth 3
to the last stage, as the 3D ResNets do. The same weights serve plain P3D
(model.arch="p3d") and the group transform module's detector backbone
(vdt_jax.models.group_transform) on 9-slice CT inputs. The reference released
no ImageNet figure for this network (its MP3D-63 weights came from COCO
detection); set --config.model.p3d_variant=18ba for the basic-block variant.
Needs `imagenet2012` prepared as TFDS ArrayRecord files (README: "Preparing ImageNet").
"""

import ml_collections

from configs import imagenet_r3d18


def get_config() -> ml_collections.ConfigDict:
    config = imagenet_r3d18.get_config()
    config.model.arch = "mp3d"
    config.model.p3d_variant = "63"
    config.model.widths = (64, 128, 256, 512)
    return config

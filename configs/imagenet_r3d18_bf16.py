"""3D ResNet-18 VDT pre-training for TPU pods / GPU clusters: bfloat16 compute, global batch 1024.

    python -m vdt_jax.pretrain --config=configs/imagenet_r3d18_bf16.py --workdir=gs://BUCKET/r3d18 \
        --config.data.data_dir=/mnt/disks/imagenet/tensorflow_datasets

Same recipe as imagenet_r3d18.py with the learning rate scaled linearly
(0.1 per 256 -> 0.4 at 1024) and 5 warmup epochs, as is usual for large
batches; parameters and optimizer state stay float32. Target: the paper's
73.07% top-1. Not yet run to completion by this project.

BatchNorm: model.bn_group_size stays 32 (inherited): the statistics noise of
32-image groups is part of the recipe being reproduced, and it does not depend
on the batch or device count. With a multiple of 32 examples per device a
group never spans devices and needs no communication; with fewer (e.g. 1024
over 64 chips) the group statistics cross devices. Set --config.model.bn_group_size=0
for statistics over the whole global batch (SyncBN).
"""

import ml_collections

from configs import imagenet_r3d18


def get_config() -> ml_collections.ConfigDict:
    config = imagenet_r3d18.get_config()
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.model.dtype = "bfloat16"
    config.optimizer.warmup_epochs = 5.0
    return config

"""3D ResNet-18 VDT pre-training for TPU pods / GPU clusters: bfloat16 compute, global batch 1024.

    python -m vdt_jax.pretrain --config=configs/imagenet_r3d18_bf16.py --workdir=gs://BUCKET/r3d18 \
        --config.data.data_dir=/mnt/disks/imagenet/tensorflow_datasets

Same recipe as imagenet_r3d18.py with the learning rate scaled linearly
(0.1 per 256 -> 0.4 at 1024) and 5 warmup epochs, as is usual for large
batches; parameters and optimizer state stay float32. Target: the paper's
73.07% top-1. Not yet run to completion by this project.
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

"""The paper's recipe: 3D ResNet-18 pre-trained on ImageNet-1k with the VDT.

    python -m vdt_jax.pretrain --config=configs/imagenet_r3d18.py --workdir=$WORKDIR \
        --config.data.data_dir=$TFDS_DATA_DIR

Needs `imagenet2012` prepared as TFDS ArrayRecord files (README: "Preparing
ImageNet"). Reference: 100 epochs, global batch 256, SGD lr 0.1 momentum 0.9
wd 1e-4, cosine to 0, label smoothing 0.1 -> 73.07% top-1 (the released
res3d18_imagenet_BN_73.07 weights; a 2D ResNet-18 gets about 69.8%); about
7 days on 8 Titan XP. This config keeps float32 compute; see
imagenet_r3d18_bf16.py for accelerators with bfloat16.

BatchNorm as the reference computed it: 8 GPUs x 32 images under
DistributedDataParallel without SyncBN, so each BatchNorm saw its own GPU's 32
images; model.bn_group_size=32 normalises each run of 32 consecutive examples
of the global batch with its own statistics, whatever the device count. The
classifier starts normal(0, 0.01) as mmcls' LinearClsHead. Remaining
differences (docs/recipe_parity.md): float32 instead of fp16, cosine decay per
step instead of per epoch.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.batch_size = 256
    config.eval_batch_size = 512
    config.num_epochs = 100.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.model.depth = 18
    config.model.widths = (64, 128, 256, 512)
    config.model.bn_group_size = 32  # per-GPU statistics of the reference's 8 x 32
    config.model.head_init_std = 0.01
    config.data.name = "imagenet2012"
    config.data.image_size = 224
    config.data.eval_resize = 256
    config.data.min_crop_scale = 0.08
    config.data.num_workers = 16
    config.data.prefetch_buffer = 8
    config.optimizer.base_lr = 0.1
    config.optimizer.warmup_epochs = 0.0
    return config

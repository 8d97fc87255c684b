"""BCV (Beyond the Cranial Vault) multi-organ CT segmentation: UNet on a VDT pre-trained 3D ResNet-18.

    python -m vdt_jax.finetune --config=configs/bcv_unet_r3d18.py --workdir=workdirs/bcv_unet_r3d18 \
        --config.data.path=/data/bcv/dataset.json \
        --config.init_from=/weights/res3d18_imagenet_BN_73.07-5ff2ecb7.pth

dataset.json in the MSD layout with UNETR's split ("training": 24 CTs,
"validation": 6) and 14 labels (background + 13 organs). Recipe (the paper,
arXiv 2201.01426, and its reference code, urmagicsmine/CSPR on GitHub):
encoder stem without stride (full resolution), isotropic
max-pool and stage strides, 4 up-blocks and an FCN head, Dice + 0.3 CE,
foreground-aware crops of 32x256x256 (D x H x W), sliding-window test with
window (32, 256, 256) and stride (12, 128, 128), SGD lr 0.02 momentum 0.9 weight
decay 5e-4 with poly decay, BatchNorm synchronised over the global batch (it is,
under jit). Spacing and HU window follow UNETR's BCV preprocessing
(1.5 x 1.5 x 2.0 mm, [-175, 250] HU -> [0, 1]); the step count and batch size
are not given by the reference and are choices. Expected: the paper's reported
BCV mean Dice for VDT pre-training, above scratch; not reproduced here.
"""

import ml_collections

from configs import finetune_default


def get_config() -> ml_collections.ConfigDict:
    config = finetune_default.get_config("segmentation")
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 40000
    config.log_every_steps = 50
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.init_from = ""

    config.model.depth = 18
    config.model.widths = (64, 128, 256, 512)
    config.model.stem_stride = False
    config.model.depth_stride = True
    config.model.conv_impl = "conv3d"

    data = config.data
    data.synthetic = ""
    data.path = ""  # required: the dataset.json
    data.train_key = "training"
    data.eval_key = "validation"
    data.target_spacing = (1.5, 1.5, 2.0)
    data.hu_window = (37.5, 425.0)  # [-175, 250] HU
    data.normalize = "window"
    data.crop_size = (32, 256, 256)
    data.foreground_probability = 0.67
    data.samples_per_case = 4
    data.flip_axes = (0, 1, 2)
    data.num_workers = 8

    config.eval.window = (32, 256, 256)
    config.eval.stride = (12, 128, 128)
    config.eval.weighting = "constant"
    config.loss.dice_weight = 1.0
    config.loss.ce_weight = 0.3

    config.optimizer.name = "sgd"
    config.optimizer.base_lr = 0.02
    config.optimizer.scale_lr_by_batch = False
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "poly"
    config.optimizer.poly_power = 0.9
    config.optimizer.warmup_epochs = 0.0
    return config

"""LiTS liver segmentation (background vs liver): UNet on a VDT pre-trained 3D ResNet-18.

    python -m vdt_jax.finetune --config=configs/lits_unet_r3d18.py --workdir=workdirs/lits_unet_r3d18 \
        --config.data.path=/data/Task03_Liver/dataset.json \
        --config.init_from=/weights/res3d18_imagenet_BN_73.07-5ff2ecb7.pth

Works with the Medical Segmentation Decathlon's Task03_Liver (= LiTS) dataset.json:
its tumour label 2 is merged into the liver (data.label_map), and 20 of its
training cases are held out for validation (data.num_val_cases; it has no
"validation" list). Recipe (the paper, arXiv 2201.01426, and its
reference code, urmagicsmine/CSPR on GitHub): as BCV (UNet,
stem without stride, sliding window (32, 256, 256) stride (12, 128, 128)) with 2
classes, HU window width 450 centre 25, Adam lr 1e-4, poly decay. Spacing, step
count and batch size are not given by the reference and are choices. Expected:
the paper's reported LiTS liver Dice for VDT pre-training; not reproduced here.
"""

import ml_collections

from configs import bcv_unet_r3d18


def get_config() -> ml_collections.ConfigDict:
    config = bcv_unet_r3d18.get_config()
    data = config.data
    data.class_names = ("background", "liver")
    data.label_map = ((2, 1),)  # tumour -> liver
    data.eval_key = "validation"
    data.num_val_cases = 20
    data.target_spacing = (1.5, 1.5, 2.0)
    data.hu_window = (25.0, 450.0)

    config.loss.ce_weight = 0.3
    config.optimizer.name = "adam"
    config.optimizer.base_lr = 1e-4
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "poly"
    return config

"""LIDC-IDRI nodule malignancy classification with a VDT pre-trained 3D ResNet-18 (the paper's recipe).

    python -m vdt_jax.finetune --config=configs/lidc_r3d18.py --workdir=workdirs/lidc_r3d18 \
        --config.data.path=/data/lidc/manifest.csv \
        --config.init_from=/weights/res3d18_imagenet_BN_73.07-5ff2ecb7.pth   # or a vdt-jax pre-training workdir

The manifest lists nodule volumes (or pre-cut patches) with labels 0 = benign,
1 = malignant, a split column and optionally the nodule centre x,y,z in world
millimetres (see vdt_jax/finetune/manifests.py). Recipe (the paper,
arXiv 2201.01426, and its reference code, urmagicsmine/CSPR on GitHub):
depth-strided ResNet-18 ("consistent with ACS"), 48^3
crops with random centre shifts of +-5 voxels, random 90-degree rotations in the
three planes and axis flips, intensity (x - 99) / 77, Adam lr 5e-4, weight decay
1e-4, x0.1 at epochs 30/60/90, 100 epochs, batch 32 x 4 GPUs. Expected: the
paper's reported LIDC accuracy/AUC for VDT pre-training, above training from
scratch (--config.init_from=""); not reproduced here (no LIDC data offline).
Set --config.model.conv_impl=depth_taps on CPU.
"""

import ml_collections

from configs import finetune_default


def get_config() -> ml_collections.ConfigDict:
    config = finetune_default.get_config("classification")
    config.batch_size = 128  # 32 x 4 GPUs in the reference
    config.eval_batch_size = 128
    config.num_epochs = 100.0
    config.num_train_steps = -1
    config.log_every_steps = 50
    config.eval_every_steps = -1  # once per epoch
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 3
    config.init_from = ""  # the VDT pre-trained ResNet-18: .pth/.safetensors or a vdt-jax workdir

    config.model.depth = 18
    config.model.widths = (64, 128, 256, 512)
    config.model.stem_stride = True
    config.model.depth_stride = True
    config.model.conv_impl = "conv3d"

    data = config.data
    data.synthetic = ""
    data.path = ""  # required: the CSV/JSON manifest
    data.class_names = ("benign", "malignant")
    data.target_spacing = ()  # the patches are used at their own spacing
    data.hu_window = ()
    data.normalize = "fixed"
    data.normalize_mean_std = (99.0, 77.0)
    data.crop_size = (48, 48, 48)
    data.max_shift = 5
    data.rotate_planes = ((0, 1), (0, 2), (1, 2))
    data.flip_axes = (0, 1, 2)
    data.num_workers = 8

    config.optimizer.name = "adam"
    config.optimizer.base_lr = 5e-4
    config.optimizer.scale_lr_by_batch = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = (30, 60, 90)
    config.optimizer.warmup_epochs = 0.0
    return config

"""LIDC-IDRI nodule malignancy classification with a VDT pre-trained 3D ResNet-18 (the paper's recipe).

    python -m vdt_jax.finetune --config=configs/lidc_r3d18.py --workdir=workdirs/lidc_r3d18 \
        --config.data.path=/data/lidc/manifest.csv \
        --config.init_from=/weights/res3d18_imagenet_BN_73.07-5ff2ecb7.pth   # or a vdt-jax pre-training workdir

The manifest lists nodule volumes (or pre-cut patches) with labels 0 = benign,
1 = malignant, a split column and optionally the nodule centre x,y,z in world
millimetres (see vdt_jax/finetune/manifests.py). Expected: the paper's LIDC
accuracy/AUC for VDT pre-training, above training from scratch
(--config.init_from=""); not reproduced here (no LIDC data offline).
conv_impl "auto" picks depth_taps on CPU, conv3d on GPU/TPU.

Parity with the reference run (urmagicsmine/CSPR
configs/LIDC_Cls_configs/resnet18_3d_BN_b32x4_LIDC_cos_smoo.py and the
transform it names); docs/recipe_parity.md lists every value with its source
line, and tests/test_recipe_parity.py keeps that table and this file in step.
Same as the reference: depth-strided ResNet-18 ("consistent with ACS"), fc
initialised normal(0.01), 48^3 crops with centre shifts uniform in +-5 voxels,
90-degree rotations k0, k1, k2 in the planes (0,1), (0,2), (1,2), then a flip
along at most one axis (none / D / H / W, 1/4 each: data.flip_mode="one_axis"),
cross-entropy without label smoothing, Adam lr 5e-4 with coupled weight decay
1e-4, x0.1 at epochs 30/60/90 after a constant warmup (lr x 0.1 for 50
iterations), 100 epochs, batch 32 per GPU x 4 GPUs with BatchNorm statistics
per GPU (model.bn_group_size=32: DistributedDataParallel without SyncBN).
Departures, with their reasons:
  - Intensity. The reference applies (x - 99) / 77 to voxels stored on a
    0-255 scale by a preparation outside its repository (ACS, whose loader it
    follows, reads the same files as x / 255 - 1); which HU window made that
    scale is not recorded. This config assumes the lung window [-1000, 400] HU
    mapped linearly to 0-255, which turns (u - 99) / 77 into
    (HU - (-1000 + 99 * 1400 / 255)) / (77 * 1400 / 255) after clipping to that
    window. With the reference's own 8-bit files converted to NIfTI, set
    --config.data.hu_window=() --config.data.normalize_mean_std=(99,77).
  - Spacing: none, as the reference (its files are used at their stored
    spacing); a scan that is not already resampled gives crops of another
    physical size.
  - Precision: float32 (the reference ran fp16 with a static loss scale of 512;
    this project has no loss scaling for float16).
  - Evaluation every epoch instead of every 2 (costs time only). Besides the
    accuracy at the arg-max and ROC AUC, eval.tuned_threshold reports the
    reference's figures at the threshold in {0, 0.1, ..., 0.9} that maximises
    sensitivity + specificity on the evaluation set itself (`tuned/*`): a bug
    there (the threshold is tuned on the test data), kept only so the numbers
    can be compared; AUC does not depend on it.
  - Labels and split: the dataset class the reference names is not in its
    repository. ACS, whose files and split (train_test_split.csv: 2,142 train
    / 526 test rows, 491 distinct test files) it uses, maps the radiologists'
    malignancy mode 1-2 to benign, 4-5 to malignant and leaves mode 3 out; do
    the same in the manifest.
Starting weights: the reference's config named
res3d18_imagenet_BN_cos_smoo_73.74-967b5578.pth when it was published
(2022-04-08; its file name "cos_smoo" matches that pre-training run: cosine lr,
label smoothing, 73.74% ImageNet top-1) and res3d18_imagenet_BN_73.07-5ff2ecb7.pth
since 2022-07-01, the file the reference released. Only the 73.07 file can be
downloaded; it is the same ResNet-18 with the same keys, so either loads the
same way. Starting from the other release changes only the starting point:
expect differences of the size of run-to-run variation, and compare with the
paper's LIDC number knowing that which release produced it is not stated.
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
    config.model.bn_group_size = 32  # per-GPU statistics, as DDP without SyncBN
    config.model.head_init_std = 0.01  # mmcls LinearClsHead

    data = config.data
    data.synthetic = ""
    data.path = ""  # required: the CSV/JSON manifest
    data.class_names = ("benign", "malignant")
    data.target_spacing = ()  # the patches are used at their own spacing
    data.hu_window = (-300.0, 1400.0)  # [-1000, 400] HU, assumed to be the 0-255 scale of the reference's files
    data.normalize = "fixed"
    data.normalize_mean_std = (-1000 + 99 * 1400 / 255, 77 * 1400 / 255)  # (u - 99) / 77 on that 0-255 scale
    data.crop_size = (48, 48, 48)
    data.max_shift = 5
    data.rotate_planes = ((0, 1), (0, 2), (1, 2))
    data.flip_axes = (0, 1, 2)
    data.flip_mode = "one_axis"
    data.num_workers = 8

    config.eval.tuned_threshold = True

    config.optimizer.name = "adam"
    config.optimizer.base_lr = 5e-4
    config.optimizer.scale_lr_by_batch = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = (30, 60, 90)
    config.optimizer.warmup = "constant"
    config.optimizer.warmup_steps = 50
    config.optimizer.warmup_ratio = 0.1
    config.optimizer.label_smoothing = 0.0
    return config

"""The fine-tuning demo on generated CT-like NIfTI data (segmentation by default, or classification).

    python -m vdt_jax.finetune                        # segmentation demo, workdir ./workdirs/finetune_demo
    python -m vdt_jax.finetune --config=configs/finetune_default.py:classification \
        --workdir=workdirs/finetune_cls_demo          # nodule classification demo
    python -m vdt_jax.finetune.sweep                  # label-efficiency sweep (classification), pre-trained vs scratch

The data (`vdt_jax.finetune.synthetic`) is generated once into
~/.cache/vdt_jax/synthetic_ct_v2: int16 CTs with HU scaling, anisotropic spacing
and mixed RAS/LPS orientations. The backbone is the demo pre-training network
(configs/default.py: ResNet3D-10, widths 16-128), so `init_from="auto"` loads
./workdirs/pretrain_demo when `python -m vdt_jax.pretrain` has run, and trains
from scratch otherwise. Expected: organ Dice near 0.9 (segmentation), ROC AUC
near 0.98 (classification); the README gives the measured figures and times.

This file holds every fine-tuning default; the recipe configs (lidc_r3d18.py,
bcv_unet_r3d18.py, lits_unet_r3d18.py) start from it.
"""

import ml_collections

from configs import default

TASKS = ("segmentation", "classification")


def get_config(task: str = "segmentation") -> ml_collections.ConfigDict:
    if task not in TASKS:
        raise ValueError(f"configs/finetune_default.py:<task> takes segmentation or classification, got {task!r}")
    config = ml_collections.ConfigDict()
    config.task = task
    config.seed = 0
    config.batch_size = 8  # global, over all devices and processes
    config.eval_batch_size = 8  # sliding windows (segmentation) or crops (classification) per eval step
    config.num_epochs = 1.0
    config.num_train_steps = 300 if task == "segmentation" else 1200  # > 0 overrides num_epochs
    config.log_every_steps = 25 if task == "segmentation" else 100
    config.eval_every_steps = 100 if task == "segmentation" else 400
    config.checkpoint_every_steps = 100
    config.keep_checkpoints = 2
    config.init_from = "auto"  # "auto": ./workdirs/pretrain_demo if it exists; a path; or "" for scratch

    config.finetune = ml_collections.ConfigDict()
    config.finetune.freeze = ()  # e.g. ("stem", "layer1"); "encoder" freezes the whole backbone
    config.finetune.in_channels_reduce = "sum"  # adapting a first conv with other input channels

    config.model = default.model_config()  # as the pre-training demo, so its weights load
    config.model.stem_stride = task == "classification"  # the UNet keeps its stem at full resolution
    config.model.depth_stride = True  # isotropic strides for 3D volumes (LIDC, BCV recipes)
    if task == "segmentation":
        config.unet = ml_collections.ConfigDict()  # the decoder and head (vdt_jax/models/unet3d.py)
        config.unet.up_conv_norm = False  # norm + ReLU after each up-block's 1x1x1 conv (the reference's UNetNeck)
        config.unet.head_channels = 0  # 0: the stem's width
        config.unet.head_convs = 1  # 3x3x3 conv-norm-ReLU layers in the head
        config.unet.head_dropout = 0.0  # whole-channel dropout before the classifier (PyTorch's Dropout3d)

    config.data = _data(task)

    config.eval = ml_collections.ConfigDict()
    config.eval.window = (16, 48, 48)  # sliding window (D, H, W) in model-space voxels
    config.eval.stride = (8, 24, 24)
    config.eval.weighting = "gaussian"  # or "constant"
    config.eval.average = "probabilities"  # what overlapping windows average: "probabilities" or "logits"
    config.eval.resize = "labels"  # to the source grid: argmax then nearest ("labels"), or trilinear then argmax ("scores")
    config.eval.dice = "per_case"  # mean of per-case Dice, or "pooled" over all cases (the reference's mDice3D)
    config.eval.largest_component = False  # keep only the largest connected foreground component before scoring
    config.eval.tuned_threshold = False  # classification: also the reference's threshold-tuned metrics (optimistic)
    config.eval.write_predictions = True
    config.eval.figure_slices = 3

    config.loss = ml_collections.ConfigDict()
    config.loss.dice_weight = 1.0  # segmentation: dice_weight * (1 - soft Dice) + ce_weight * cross-entropy
    config.loss.ce_weight = 1.0
    config.loss.dice_denominator = "sum"  # "sum" (sum p + sum g), "squares" or "sum_plus_overlap" (vdt_jax/losses.py)
    config.loss.dice_per_sample = False  # Dice per example, then the mean; False: pooled over the batch
    config.loss.dice_background = True  # include class 0 in the Dice mean
    config.loss.dice_smooth = 1e-5

    config.optimizer = default.optimizer_config()
    config.optimizer.name = "adam"
    config.optimizer.base_lr = 2e-3
    config.optimizer.scale_lr_by_batch = False
    config.optimizer.weight_decay = 0.0
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.label_smoothing = 0.0
    return config


def _data(task: str) -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict()
    data.synthetic = task  # the generated demo dataset, used only while data.path is empty
    data.synthetic_root = ml_collections.config_dict.placeholder(str)  # unset: ~/.cache/vdt_jax/synthetic_ct_v2
    data.path = ""  # segmentation: a dataset.json; classification: a CSV or JSON manifest
    data.cache_dir = ml_collections.config_dict.placeholder(str)  # preprocessed volumes; unset: ~/.cache/vdt_jax/preprocessed
    data.num_workers = 0
    data.prefetch_buffer = 2
    data.train_fraction = 1.0  # label efficiency: a seeded (stratified) subset of the training data
    data.fraction_seed = 0
    # Preprocessing (vdt_jax/finetune/nifti.py): orientation to RAS, header scaling, then these.
    data.in_channels = 1
    data.label_map = ()  # (file value, class) pairs, e.g. ((2, 1),) merges label 2 into 1
    data.target_spacing = (1.8, 1.8, 2.5) if task == "segmentation" else (1.0, 1.0, 1.0)  # (x, y, z) mm; () keeps each file's
    data.hu_window = (40.0, 400.0) if task == "segmentation" else (-300.0, 1400.0)  # (centre, width); () for none
    data.normalize = "window"  # "window" (the window -> [0, 1]), "fixed" (normalize_mean_std), "zscore" or "none"
    data.normalize_mean_std = (0.0, 1.0)  # (mean, std) for normalize="fixed"
    # Which examples and classes.
    data.class_names = () if task == "segmentation" else ("benign", "malignant")  # segmentation: () = the dataset.json's
    data.train_key = "training"  # segmentation: dataset.json lists
    data.eval_key = "validation"
    data.num_val_cases = 0  # held out of `train_key` when the json has no `eval_key`
    data.val_seed = 0  # which cases are held out
    data.train_split = "train"  # classification: manifest splits
    data.eval_split = "val"
    # Crops and augmentation.
    data.crop_size = (16, 32, 32) if task == "segmentation" else (24, 24, 24)  # (D, H, W) model-space voxels
    data.foreground_probability = 0.67  # segmentation: foreground-centred crops
    data.samples_per_case = 4  # segmentation: crops per case per epoch
    data.max_shift = 3  # classification: random crop-centre shift, voxels
    data.flip_axes = (1, 2) if task == "segmentation" else (0, 1, 2)
    data.flip_mode = "independent"  # each of flip_axes with p 1/2, or "one_axis": at most one, each outcome equally likely
    data.rotate_planes = () if task == "segmentation" else ((0, 1), (0, 2), (1, 2))  # random 90-degree rotations
    if task == "segmentation":  # vdt_jax/finetune/slab_crops.py
        data.crop_sampler = "foreground"  # or the reference's "random_z_crop" (BCV) / "key_slice" (LiTS)
        data.max_class_ratio = 1.0  # random_z_crop: re-draw while one class fills this share of the slab
        data.rescale_size = 0  # > 0: random in-plane rescale to rescale_size x ratio (longer side); slab samplers
        data.rescale_ratio = (1.0, 1.0)  # (low, high) of the uniform ratio
    return data

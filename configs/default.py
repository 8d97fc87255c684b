"""The built-in demo: a small 3D ResNet pre-trained with the VDT on `vdt_shapes`.

    python -m vdt_jax.pretrain                      # this config, workdir ./workdirs/pretrain_demo
    python -m vdt_jax.pretrain --config=configs/default.py --workdir=/tmp/demo --config.num_epochs=2

`vdt_shapes` is a procedurally drawn dataset (10 shape classes on textured
backgrounds, random colours) that the package generates offline on first use,
so this runs anywhere without downloads. Expected on a 2-core CPU: a few
minutes, validation top-1 far above the 10% chance level (the README gives the
measured time and accuracy). Every field can be overridden with
--config.<field>=<value>.

This file also holds the defaults every other config starts from:
`model_config()` and `optimizer_config()` are shared with the fine-tuning
configs, so each default is written once.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    """The network: a 3D ResNet or a pseudo-3D P3D / MP3D (see vdt_jax/models/resnet3d.py and p3d.py)."""
    model = ml_collections.ConfigDict()
    model.arch = "resnet3d"  # or the pseudo-3D "mp3d" / "p3d" (vdt_jax/models/p3d.py)
    model.depth = 10  # ResNet depth (arch resnet3d)
    model.p3d_variant = "63"  # "63" (bottleneck) or "18ba" (basic blocks), ...; arch mp3d / p3d
    model.widths = (16, 32, 64, 128)
    model.stem_stride = True
    model.depth_stride = False  # VDT pre-training never strides depth
    model.stage_strides = (1, 2, 2, 2)
    model.norm = "batch"
    model.shortcut_type = "B"  # "A": parameter-free shortcut (MedicalNet), ResNets only
    model.force_downsample = False  # layer1.0 shortcut conv of the reference release, ResNets only
    model.conv_impl = "auto"  # depth_taps on CPU (README "Speed"), conv3d on GPU/TPU (cuDNN, MXU)
    model.bn_group_size = 0  # BatchNorm statistics per group of N consecutive examples; 0: whole global batch
    model.head_init_std = 0.0  # > 0: classifier (and UNet head) initialised normal(0, std), bias 0; 0: Flax default
    model.dtype = "float32"
    return model


def optimizer_config() -> ml_collections.ConfigDict:
    """Optimizer and learning-rate schedule (see vdt_jax/train/optim.py)."""
    optimizer = ml_collections.ConfigDict()
    optimizer.name = "sgd"  # sgd, adam or adamw
    optimizer.base_lr = 1.6  # per 256 examples, scaled by batch_size / 256 (scale_lr_by_batch): 0.2 at batch 32
    optimizer.scale_lr_by_batch = True
    optimizer.momentum = 0.9  # sgd
    optimizer.nesterov = False  # sgd
    optimizer.weight_decay = 1e-4  # coupled (added to the gradient), as PyTorch's SGD and Adam do
    optimizer.schedule = "cosine"  # cosine, constant, step or poly, after the warmup
    optimizer.warmup = "linear"  # "linear" from 0, or "constant": lr x warmup_ratio (mmcv's)
    optimizer.warmup_epochs = 1.0
    optimizer.warmup_steps = 0  # > 0 overrides warmup_epochs
    optimizer.warmup_ratio = 0.1  # warmup="constant"
    optimizer.decay_epochs = ()  # step: x0.1 at these epochs
    optimizer.poly_power = 0.9  # poly
    optimizer.min_lr = 0.0  # where poly and cosine end
    optimizer.label_smoothing = 0.1  # classification losses
    return optimizer


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 32  # global, over all devices and processes; the demo learned faster per image than at 64
    config.eval_batch_size = 128
    config.num_epochs = 8.0
    config.num_train_steps = -1  # > 0 overrides num_epochs
    config.log_every_steps = 20
    config.eval_every_steps = -1  # -1: once per epoch
    config.checkpoint_every_steps = 100
    config.keep_checkpoints = 3
    config.init_from = ""  # a vdt-jax workdir/checkpoint or a PyTorch .pth/.safetensors file

    config.model = model_config()

    config.data = ml_collections.ConfigDict()
    config.data.name = "vdt_shapes"
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir; unset: $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.image_size = 56
    config.data.eval_resize = 64
    config.data.min_crop_scale = 0.35  # the shapes fill part of the image; 0.08 would crop them away
    config.data.num_workers = 0
    config.data.decoder = "opencv"  # "pil" without opencv-python-headless; README "Speed": about 2x per core
    config.data.interpolation = "bilinear"  # OpenCV bilinear, no antialiasing (the reference); or "bilinear_antialias" (PIL)
    config.data.prefetch_buffer = 4

    config.vdt = ml_collections.ConfigDict()
    config.vdt.shuffle_depth = True
    config.vdt.mean = 114.495
    config.vdt.std = 57.63

    config.optimizer = optimizer_config()
    return config

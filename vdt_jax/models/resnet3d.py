"""3D ResNets (the reference "ResNet3D") in Flax Linen, channels-last (N, D, H, W, C).

Submodule names follow torchvision's ResNet keys (`conv1`, `bn1`, `layer2_0`,
`downsample_conv`, `fc`, ...) so that `vdt_jax.export` maps them to PyTorch
one to one. Parameters are float32; `dtype` is the compute dtype.

VDT pre-training never strides along depth: with the defaults a (3, 224, 224, 1)
volume ends as a (3, 7, 7, 512) feature map. `depth_stride=True` strides depth
like height and width (the LIDC recipe, and MONAI's ResNet), `stem_stride=False`
keeps the stem at full resolution (the segmentation UNet's encoder).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vdt_jax.errors import ConfigError
from vdt_jax.models.conv import Conv3D
from vdt_jax.models.norms import GroupedBatchNorm
from vdt_jax.models.pooling import max_pool3d

ModuleDef = Any
NORMS = ("batch", "group")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
SHORTCUT_TYPES = ("A", "B")


class BasicBlock(nn.Module):
    """conv3x3x3-norm-relu-conv3x3x3-norm plus shortcut, then ReLU."""

    features: int
    strides: tuple[int, int, int]
    conv: ModuleDef
    norm: ModuleDef
    shortcut_type: str = "B"
    force_downsample: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, 3, self.strides, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, 3, name="conv2")(y)
        y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (strided), 1x1x1 expand (x4), plus shortcut, then ReLU."""

    features: int
    strides: tuple[int, int, int]
    conv: ModuleDef
    norm: ModuleDef
    shortcut_type: str = "B"
    force_downsample: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, 1, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, 3, self.strides, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.features * 4, 1, name="conv3")(y)
        y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + _shortcut(self, x, self.features * 4))


def _shortcut(block: nn.Module, x: jax.Array, out_features: int) -> jax.Array:
    """The block's shortcut: identity where the shape is kept (unless `force_downsample`), else by `shortcut_type`.

    Type B: a strided 1x1x1 conv + norm. Type A (MedicalNet, MONAI
    `shortcut_type="A"`): parameter-free, the input subsampled by the stride
    with zero channels appended.
    """
    same_shape = x.shape[-1] == out_features and all(s == 1 for s in block.strides)
    if same_shape and not block.force_downsample:
        return x
    if block.shortcut_type == "A":
        x = x[:, :: block.strides[0], :: block.strides[1], :: block.strides[2]]
        return jnp.pad(x, [(0, 0)] * 4 + [(0, out_features - x.shape[-1])])
    x = block.conv(out_features, 1, block.strides, name="downsample_conv")(x)
    return block.norm(name="downsample_bn")(x)


class ResNet3D(nn.Module):
    """3D ResNet backbone with an optional classifier.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block_cls: `BasicBlock` or `Bottleneck`.
      num_classes: classifier outputs; None returns the multi-scale features
        {"stem", "layer1", ..., "layer4"} instead of logits.
      widths: channels of the four stages (before the bottleneck expansion).
      stem_stride: stride the stem conv by 2 in-plane (and in depth with
        `depth_stride`); False keeps the stem output at input resolution.
      depth_stride: stride depth like height and width everywhere.
      stage_strides: in-plane stride of each stage's first block.
      norm: "batch" (synchronised over the global batch under jit) or "group" (32 groups).
      bn_group_size: with norm="batch", BatchNorm statistics over groups of this
        many consecutive examples (`vdt_jax.models.norms`); 0 = the whole batch.
      frozen_stages: stages ("stem", "layer1".."layer4") whose BatchNorms stay in
        evaluation mode when training: they normalise with, and never update,
        their running statistics (the reference's frozen_stages).
      head_init_std: > 0 initialises the classifier normal(0, std) with zero
        bias (mmcls' LinearClsHead uses 0.01); 0 keeps Flax's default.
      shortcut_type: "B" (1x1x1 conv + norm where the shape changes) or "A"
        (parameter-free strided identity with zero-padded channels, MedicalNet).
      force_downsample: give layer1's first block a 1x1x1 conv + norm shortcut
        although its shape does not change, as the reference's released
        pre-training network has it (`layer1.0.downsample.*`, a bug there).
      conv_impl: see `vdt_jax.models.conv`.
      dtype: compute dtype; parameters stay `param_dtype`.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef = BasicBlock
    num_classes: int | None = 1000
    widths: Sequence[int] = (64, 128, 256, 512)
    stem_kernel: int = 7
    stem_stride: bool = True
    depth_stride: bool = False
    stage_strides: Sequence[int] = (1, 2, 2, 2)
    norm: str = "batch"
    shortcut_type: str = "B"
    force_downsample: bool = False
    bn_momentum: float = 0.9
    bn_group_size: int = 0
    frozen_stages: Sequence[str] = ()
    head_init_std: float = 0.0
    conv_impl: str = "conv3d"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _stride(self, s: int) -> tuple[int, int, int]:
        return (s if self.depth_stride else 1, s, s)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | dict[str, jax.Array]:
        if self.shortcut_type not in SHORTCUT_TYPES:
            raise ValueError(f"unknown shortcut_type {self.shortcut_type!r}; expected one of {SHORTCUT_TYPES}")
        conv = functools.partial(Conv3D, impl=self.conv_impl, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = stage_norms(self, train)
        features = {}
        x = conv(self.widths[0], self.stem_kernel, self._stride(2 if self.stem_stride else 1), name="conv1")(x)
        x = nn.relu(norm["stem"](name="bn1")(x))
        features["stem"] = x
        x = max_pool3d(x, (3, 3, 3), self._stride(2), ((1, 1),) * 3)
        for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for i in range(num_blocks):
                strides = self._stride(self.stage_strides[stage]) if i == 0 else (1, 1, 1)
                shortcut = dict(shortcut_type=self.shortcut_type, force_downsample=self.force_downsample and i == 0)
                x = self.block_cls(width, strides, conv, norm[f"layer{stage + 1}"], **shortcut, name=f"layer{stage + 1}_{i}")(x)
            features[f"layer{stage + 1}"] = x
        if self.num_classes is None:
            return features
        x = jnp.mean(x, axis=(1, 2, 3))
        init = {"kernel_init": nn.initializers.normal(self.head_init_std)} if self.head_init_std > 0 else {}
        fc = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc", **init)
        return fc(x).astype(jnp.float32)


def stage_norms(net: nn.Module, train: bool) -> dict[str, Callable[..., nn.Module]]:
    """The norm constructor of each stage of `net` (a ResNet3D or P3D): training mode except frozen stages.

    Reads the net's norm, bn_momentum, bn_group_size, frozen_stages, dtype and param_dtype.
    """
    unknown = set(net.frozen_stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"frozen stages {sorted(unknown)} unknown; expected names from {STAGES}")
    return {
        stage: norm_factory(
            net.norm,
            train and stage not in net.frozen_stages,
            momentum=net.bn_momentum,
            dtype=net.dtype,
            param_dtype=net.param_dtype,
            group_size=net.bn_group_size,
        )
        for stage in STAGES
    }


def norm_factory(
    kind: str, train: bool, *, momentum: float, dtype: Any, param_dtype: Any, group_size: int = 0
) -> Callable[..., nn.Module]:
    """Norm layer constructor: BatchNorm (eps 1e-5, running stats in eval) or GroupNorm with 32 groups.

    `group_size` > 0 (BatchNorm only) computes training statistics per group of
    that many consecutive examples (`GroupedBatchNorm`); 0 uses the whole batch.
    """
    if group_size is not None and group_size < 0:
        raise ConfigError(f"model.bn_group_size must be >= 0 (0: the whole batch), got {group_size}")
    if group_size and kind != "batch":
        raise ConfigError(f"model.bn_group_size={group_size} applies to norm='batch' only, not norm={kind!r}; set it to 0")
    if kind == "batch":
        grouped = {"group_size": group_size} if group_size else {}
        return functools.partial(
            GroupedBatchNorm if group_size else nn.BatchNorm,
            **grouped,
            use_running_average=not train,
            momentum=momentum,
            epsilon=1e-5,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    if kind == "group":
        # Two-pass variance, as PyTorch: E[x^2] - E[x]^2 loses float32 digits on groups with a large mean
        # (a deep P3D-63 then drifted 8.6e-5 from float64 outputs at layer4, two-pass 2.1e-5).
        return functools.partial(
            nn.GroupNorm, num_groups=32, epsilon=1e-5, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype
        )
    raise ConfigError(f"unknown norm {kind!r}; expected one of {NORMS}")

ResNet3D10 = functools.partial(ResNet3D, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock)
ResNet3D18 = functools.partial(ResNet3D, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet3D34 = functools.partial(ResNet3D, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet3D50 = functools.partial(ResNet3D, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet3D101 = functools.partial(ResNet3D, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet3D152 = functools.partial(ResNet3D, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

DEPTHS = {10: ResNet3D10, 18: ResNet3D18, 34: ResNet3D34, 50: ResNet3D50, 101: ResNet3D101, 152: ResNet3D152}


def resnet3d(depth: int, **kwargs: Any) -> ResNet3D:
    """The 3D ResNet of the given depth (10, 18, 34, 50, 101 or 152)."""
    if depth not in DEPTHS:
        raise ConfigError(f"no 3D ResNet of depth {depth}; choose one of {sorted(DEPTHS)}")
    return DEPTHS[depth](**kwargs)

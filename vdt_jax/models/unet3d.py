"""A 3D UNet on a 3D ResNet encoder: the segmentation network of the BCV and LiTS recipes.

The encoder is a `ResNet3D` without classifier (its multi-scale features
{"stem", "layer1", ..., "layer4"}), held as the submodule "encoder", so its
parameters sit under params["encoder"] with the same names as a pre-trained
classification backbone and load by name (`vdt_jax.weights.pretrained`). The recipes
build it with `stem_stride=False` (the stem output stays at full resolution and
becomes the last skip) and `depth_stride=True` (isotropic pooling and strides).
A pseudo-3D `P3D` / MP3D encoder works the same way with `stem_stride=False`
and depth never strided (`depth_stride=False`).

Decoder: four up-blocks, layer4 -> layer3 -> layer2 -> layer1 -> stem. Each
upsamples trilinearly to the skip's size (x2 for even sizes), applies a 1x1x1
conv to the skip's width (followed by norm + ReLU with `up_conv_norm`, as the
reference's UNetNeck), concatenates the skip, then two 3x3x3 conv-norm-ReLU.
An FCN head (`head_convs` 3x3x3 conv-norm-ReLU of `head_channels`, channel
dropout, then a 1x1x1 conv with bias) gives per-voxel logits (float32). The
defaults (one head conv at the stem's width, no dropout, no up-conv norm) are
the demo's; the BCV/LiTS recipes set the reference's (two convs of 16, dropout 0.1).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from vdt_jax.errors import ConfigError
from vdt_jax.models.conv import Conv3D
from vdt_jax.models.factory import build_model
from vdt_jax.models.p3d import P3D
from vdt_jax.models.resnet3d import ResNet3D, norm_factory

ModuleDef = Any
SKIPS = ("layer3", "layer2", "layer1", "stem")


class UpBlock(nn.Module):
    """Upsample to the skip's size, 1x1x1 conv, concatenate the skip, two 3x3x3 conv-norm-ReLU."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    up_conv_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        x = jax.image.resize(x, (x.shape[0], *skip.shape[1:4], x.shape[-1]), method="trilinear")
        x = self.conv(self.features, 1, name="up_conv")(x)
        if self.up_conv_norm:
            x = nn.relu(self.norm(name="up_norm")(x))
        x = jnp.concatenate([skip, x.astype(skip.dtype)], axis=-1)
        for i in (1, 2):
            x = self.conv(self.features, 3, name=f"conv{i}")(x)
            x = nn.relu(self.norm(name=f"norm{i}")(x))
        return x


class UNet3D(nn.Module):
    """UNet decoder and FCN head over a `ResNet3D` feature encoder.

    Attributes:
      encoder: a ResNet3D or P3D built with num_classes=None; its norm, conv
        implementation and dtypes are used by the decoder too.
      num_classes: output channels (background included).
      up_conv_norm: norm + ReLU after each up-block's 1x1x1 conv.
      head_channels: width of the head convs; 0 = the stem's width.
      head_convs: 3x3x3 conv-norm-ReLU layers in the head (>= 1).
      head_dropout: rate of whole-channel dropout before the classifier
        (PyTorch's Dropout3d); needs a "dropout" rng in training.
    The classifier's initialisation follows `encoder.head_init_std`.
    """

    encoder: ResNet3D | P3D
    num_classes: int
    up_conv_norm: bool = False
    head_channels: int = 0
    head_convs: int = 1
    head_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.encoder.num_classes is not None:
            raise ValueError("the UNet encoder must be a ResNet3D or P3D with num_classes=None (feature outputs)")
        features = self.encoder(x, train=train)
        conv = functools.partial(
            Conv3D, impl=self.encoder.conv_impl, dtype=self.encoder.dtype, param_dtype=self.encoder.param_dtype
        )
        norm = self._norm_factory(train)
        y = features["layer4"]
        for i, name in enumerate(SKIPS, start=1):
            y = UpBlock(features[name].shape[-1], conv, norm, self.up_conv_norm, name=f"up{i}")(y, features[name])
        if self.head_convs < 1:
            raise ConfigError(f"unet.head_convs must be >= 1, got {self.head_convs}")
        for i in range(self.head_convs):
            suffix = str(i + 1) if i else ""  # head_conv, head_conv2, ...: the one-conv head keeps its names
            y = conv(self.head_channels or features["stem"].shape[-1], 3, name=f"head_conv{suffix}")(y)
            y = nn.relu(norm(name=f"head_norm{suffix}")(y))
        y = nn.Dropout(self.head_dropout, broadcast_dims=(1, 2, 3), deterministic=not train)(y)
        std = self.encoder.head_init_std
        init = {"kernel_init": nn.initializers.normal(std)} if std > 0 else {}
        return conv(self.num_classes, 1, use_bias=True, name="head", **init)(y).astype(jnp.float32)

    def _norm_factory(self, train: bool) -> Callable[..., nn.Module]:
        encoder = self.encoder
        if encoder.norm == "batch":
            return norm_factory(
                "batch",
                train,
                momentum=encoder.bn_momentum,
                dtype=encoder.dtype,
                param_dtype=encoder.param_dtype,
                group_size=encoder.bn_group_size,
            )

        def group_norm(name: str) -> Callable[[jax.Array], jax.Array]:
            # 32 groups like the encoder, fewer when a narrow decoder has fewer channels.
            def apply(x: jax.Array) -> jax.Array:
                groups = math.gcd(32, x.shape[-1])
                return nn.GroupNorm(groups, epsilon=1e-5, dtype=encoder.dtype, param_dtype=encoder.param_dtype, name=name)(x)

            return apply

        return group_norm


def build_unet(
    model_config: ml_collections.ConfigDict,
    unet_config: ml_collections.ConfigDict,
    num_classes: int,
    frozen_stages: Sequence[str] = (),
) -> UNet3D:
    """The UNet whose encoder is the 3D ResNet `model_config` describes (see `build_model`).

    Args:
      model_config: the encoder (configs/default.py `model_config()`).
      unet_config: up_conv_norm, head_channels, head_convs, head_dropout
        (configs/finetune_default.py, the `unet` block).
      num_classes: output channels, background included.
      frozen_stages: encoder stages whose BatchNorm statistics stay fixed.
    """
    return UNet3D(
        encoder=build_model(model_config, num_classes=None, frozen_stages=frozen_stages),
        num_classes=num_classes,
        up_conv_norm=bool(unet_config.up_conv_norm),
        head_channels=int(unet_config.head_channels),
        head_convs=int(unet_config.head_convs),
        head_dropout=float(unet_config.head_dropout),
    )

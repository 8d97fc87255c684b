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
conv to the skip's width, concatenates the skip, then two 3x3x3
conv-norm-ReLU. An FCN head (3x3x3 conv-norm-ReLU, then a 1x1x1 conv with bias)
gives per-voxel logits (float32).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

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

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        x = jax.image.resize(x, (x.shape[0], *skip.shape[1:4], x.shape[-1]), method="trilinear")
        x = self.conv(self.features, 1, name="up_conv")(x)
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
    """

    encoder: ResNet3D | P3D
    num_classes: int

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
            y = UpBlock(features[name].shape[-1], conv, norm, name=f"up{i}")(y, features[name])
        y = conv(features["stem"].shape[-1], 3, name="head_conv")(y)
        y = nn.relu(norm(name="head_norm")(y))
        return conv(self.num_classes, 1, use_bias=True, name="head")(y).astype(jnp.float32)

    def _norm_factory(self, train: bool) -> Callable[..., nn.Module]:
        encoder = self.encoder
        if encoder.norm == "batch":
            return norm_factory(
                "batch", train, momentum=encoder.bn_momentum, dtype=encoder.dtype, param_dtype=encoder.param_dtype
            )

        def group_norm(name: str) -> Callable[[jax.Array], jax.Array]:
            # 32 groups like the encoder, fewer when a narrow decoder has fewer channels.
            def apply(x: jax.Array) -> jax.Array:
                groups = math.gcd(32, x.shape[-1])
                return nn.GroupNorm(groups, epsilon=1e-5, dtype=encoder.dtype, param_dtype=encoder.param_dtype, name=name)(x)

            return apply

        return group_norm


def build_unet(model_config: ml_collections.ConfigDict, num_classes: int) -> UNet3D:
    """The UNet whose encoder is the 3D ResNet `model_config` describes (see `build_model`)."""
    return UNet3D(encoder=build_model(model_config, num_classes=None), num_classes=num_classes)

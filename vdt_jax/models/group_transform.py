"""The group transform module (GTM): 3D stage features -> 2D maps for a 2D FPN detector.

A pseudo-3D backbone keeps depth (the 9 slices of a DeepLesion input in MP3D);
a 2D detector wants (N, H, W, C). Each stage output (N, D, H, W, C) is turned
into (N, H, W, C) by one of the reference's conversions:

  "groupconv"  (the GTM) the feature read as C*D channels, channel c*D + d, and
               a 1x1 2D convolution with C groups and no bias: output channel c
               is a learned mix of the D slices of input channel c. Kernel
               (1, 1, D, C), Flax's grouped-conv layout of PyTorch's (C, D, 1, 1).
  "depthconv"  a (D, 1, 1) 3D convolution without padding (C -> C, all channels
               mixed; the reference's `conversion_type='conv3d'`).
  "centre"     the centre slice D // 2 (no parameters; `center_crop`).

"groupconv" and "depthconv" need the stage depth to equal `slices` (MP3D keeps
the input depth in every stage). Variable names are the reference's
(`groupconv_{i}`, `conv3d_all_{i}` for stage i), inside this wrapper's scope
next to `backbone`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vdt_jax.models.conv import Conv3D

CONVERSIONS = ("groupconv", "depthconv", "centre")
STAGES = ("layer1", "layer2", "layer3", "layer4")


def slice_average(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Initial group-conv kernel (1, 1, D, C) that averages the D slices: the GTM starts as a depth mean."""
    del key
    return jnp.full(shape, 1.0 / shape[2], dtype)


class GroupConv(nn.Module):
    """(N, D, H, W, C) -> (N, H, W, C): per-channel learned mix of the D slices (the GTM's grouped 1x1 conv)."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = slice_average

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        depth, channels = x.shape[1], x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (1, 1, depth, channels), self.param_dtype)
        # A grouped 1x1 conv over channels c*D + d with C groups is this contraction over d.
        return jnp.einsum("ndhwc,dc->nhwc", x.astype(self.dtype), kernel[0, 0].astype(self.dtype))


class GroupTransformBackbone(nn.Module):
    """A 3D backbone (num_classes=None) whose stage outputs come out as 2D maps for an FPN.

    Attributes:
      backbone: a `P3D` or `ResNet3D` returning {"stem", "layer1", ..., "layer4"}.
      conversion: one of CONVERSIONS.
      slices: the depth "groupconv"/"depthconv" expect at every stage (9 for DeepLesion).

    Returns (from `__call__`): {"layer1": (N, H/4, W/4, C1), ..., "layer4": (N, H/32, W/32, C4)}.
    """

    backbone: nn.Module
    conversion: str = "groupconv"
    slices: int = 9
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        if self.conversion not in CONVERSIONS:
            raise ValueError(f"unknown GTM conversion {self.conversion!r}; expected one of {CONVERSIONS}")
        features = self.backbone(x, train=train)
        if not isinstance(features, dict):
            raise ValueError("the GTM needs a backbone built with num_classes=None (multi-scale features)")
        return {name: self._to_2d(features[name], i) for i, name in enumerate(STAGES, start=1)}

    def _to_2d(self, x: jax.Array, stage: int) -> jax.Array:
        if self.conversion == "centre":
            return x[:, x.shape[1] // 2]
        if x.shape[1] != self.slices:
            raise ValueError(
                f"GTM conversion {self.conversion!r} was built for {self.slices} slices but layer{stage} has depth "
                f"{x.shape[1]}: feed {self.slices}-slice volumes to a backbone that keeps depth (MP3D), set "
                f"slices={x.shape[1]}, or use conversion='centre'"
            )
        if self.conversion == "groupconv":
            return GroupConv(self.dtype, self.param_dtype, name=f"groupconv_{stage}")(x)
        conv = Conv3D(
            x.shape[-1], (self.slices, 1, 1), padding=0, dtype=self.dtype, param_dtype=self.param_dtype,
            impl=getattr(self.backbone, "conv_impl", "conv3d"), name=f"conv3d_all_{stage}",
        )  # fmt: skip
        return conv(x)[:, 0]

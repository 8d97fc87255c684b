"""Build a network from the `model` block of a config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from vdt_jax.errors import ConfigError
from vdt_jax.models.resnet3d import ResNet3D, resnet3d

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    """The jnp dtype for a config's dtype string."""
    if name not in DTYPES:
        raise ConfigError(f"unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_model(model_config: ml_collections.ConfigDict, num_classes: int | None) -> ResNet3D:
    """The 3D ResNet described by `model_config` (configs/default.py: `model_config()` lists the fields).

    Args:
      model_config: depth, widths, stem_stride, depth_stride, stage_strides,
        norm, conv_impl, dtype.
      num_classes: classifier size, or None for the multi-scale feature backbone.
    """
    return resnet3d(
        int(model_config.depth),
        num_classes=num_classes,
        widths=tuple(model_config.widths),
        stem_stride=bool(model_config.stem_stride),
        depth_stride=bool(model_config.depth_stride),
        stage_strides=tuple(model_config.stage_strides),
        norm=model_config.norm,
        conv_impl=model_config.conv_impl,
        dtype=compute_dtype(model_config.dtype),
    )

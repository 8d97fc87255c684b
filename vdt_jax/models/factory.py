"""Build a network from the `model` block of a config."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import ml_collections

from vdt_jax.errors import ConfigError
from vdt_jax.models.resnet3d import STAGES, ResNet3D, resnet3d

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    """The jnp dtype for a config's dtype string."""
    if name not in DTYPES:
        raise ConfigError(f"unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_model(
    model_config: ml_collections.ConfigDict, num_classes: int | None, frozen_stages: Sequence[str] = ()
) -> ResNet3D:
    """The 3D ResNet described by `model_config` (configs/default.py: `model_config()` lists the fields).

    Args:
      model_config: depth, widths, stem_stride, depth_stride, stage_strides,
        norm, bn_group_size, head_init_std, conv_impl, dtype.
      num_classes: classifier size, or None for the multi-scale feature backbone.
      frozen_stages: stages whose BatchNorm statistics stay fixed in training
        (finetune.freeze; "encoder" means every stage).
    """
    return resnet3d(
        int(model_config.depth),
        num_classes=num_classes,
        widths=tuple(model_config.widths),
        stem_stride=bool(model_config.stem_stride),
        depth_stride=bool(model_config.depth_stride),
        stage_strides=tuple(model_config.stage_strides),
        norm=model_config.norm,
        bn_group_size=int(model_config.bn_group_size),
        frozen_stages=tuple(STAGES) if "encoder" in frozen_stages else tuple(frozen_stages),
        head_init_std=float(model_config.head_init_std),
        conv_impl=model_config.conv_impl,
        dtype=compute_dtype(model_config.dtype),
    )

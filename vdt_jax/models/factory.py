"""Build a network from the `model` block of a config."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vdt_jax.errors import ConfigError
from vdt_jax.models.p3d import ARCHS as P3D_ARCHS
from vdt_jax.models.p3d import P3D, p3d
from vdt_jax.models.resnet3d import STAGES, resnet3d

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ARCHS = ("resnet3d", *P3D_ARCHS)
# ResNet3D options: the only value a pseudo-3D network can honour, and why.
_P3D_FIXED = {
    "depth_stride": (False, "pseudo-3D nets never stride depth"),
    "stage_strides": ((1, 2, 2, 2), "pseudo-3D nets stride in-plane by 2 from stage 2 on"),
    "shortcut_type": ("B", "pseudo-3D shortcuts are 1x1x1 conv + norm"),
    "force_downsample": (False, "the forced layer1 shortcut is the reference ResNet release's"),
}


def compute_dtype(name: str):
    """The jnp dtype for a config's dtype string."""
    if name not in DTYPES:
        raise ConfigError(f"unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_model(
    model_config: ml_collections.ConfigDict, num_classes: int | None, frozen_stages: Sequence[str] = ()
) -> nn.Module:
    """The network described by `model_config` (configs/default.py: `model_config()` lists the fields).

    Args:
      model_config: arch ("resnet3d", "p3d" or "mp3d"); depth for ResNets,
        p3d_variant ("63" or "18ba") for the pseudo-3D nets; widths, norm,
        bn_group_size, head_init_std, stem_stride, conv_impl, dtype; ResNet-only
        (a pseudo-3D net refuses other values than the defaults): depth_stride,
        stage_strides, shortcut_type, force_downsample.
      num_classes: classifier size, or None for the multi-scale feature backbone.
      frozen_stages: stages whose BatchNorm statistics stay fixed in training
        (finetune.freeze; "encoder" means every stage).

    Returns:
      A `ResNet3D` or `P3D` module.
    """
    arch = model_config.arch
    if arch not in ARCHS:
        raise ConfigError(f"unknown config.model.arch {arch!r}; expected one of {ARCHS}")
    common = dict(
        num_classes=num_classes,
        widths=tuple(model_config.widths),
        stem_stride=bool(model_config.stem_stride),
        norm=model_config.norm,
        bn_group_size=int(model_config.bn_group_size),
        frozen_stages=tuple(STAGES) if "encoder" in frozen_stages else tuple(frozen_stages),
        head_init_std=float(model_config.head_init_std),
        conv_impl=model_config.conv_impl,
        dtype=compute_dtype(model_config.dtype),
    )
    if arch != "resnet3d":
        return _build_p3d(model_config, common)
    return resnet3d(
        int(model_config.depth),
        depth_stride=bool(model_config.depth_stride),
        stage_strides=tuple(model_config.stage_strides),
        shortcut_type=model_config.shortcut_type,
        force_downsample=bool(model_config.force_downsample),
        **common,
    )


def _build_p3d(model_config: ml_collections.ConfigDict, common: dict) -> P3D:
    for field, (fixed, why) in _P3D_FIXED.items():
        value = model_config[field]
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != fixed:
            raise ConfigError(
                f"config.model.{field}={value!r} has no meaning for arch {model_config.arch!r} ({why}); "
                f"set config.model.{field}={fixed!r}"
            )
    return p3d(model_config.arch, model_config.p3d_variant, **common)

"""Names and layouts: how a vdt-jax ResNet's Flax variables map to a PyTorch state dict.

The Flax ResNets name their modules after torchvision's ResNet, so the mapping
is one to one (see `vdt_jax.models.resnet3d`):

  Flax variables                              PyTorch state dict
  params/conv1/kernel (kD, kH, kW, I, O)      conv1.weight (O, I, kD, kH, kW)
  params/bn1/{scale, bias}                    bn1.{weight, bias}
  batch_stats/bn1/{mean, var}                 bn1.{running_mean, running_var}
  (nothing)                                   bn1.num_batches_tracked (int64, 0-d)
  params/layer2_0/downsample_conv/kernel      layer2.0.downsample.0.weight
  params/layer2_0/downsample_bn/...           layer2.0.downsample.1.*
  params/fc/kernel (in, out), fc/bias         fc.weight (out, in), fc.bias

Key styles add what each PyTorch codebase expects: "plain" (CSPR backbones,
torchvision), "monai" (the same keys; MONAI's default `bias_downsample=True`
also wants the zero shortcut biases of `downsample_bias=True`), "mmcls"
(`backbone.` prefix, classifier as `head.fc.*`) and "medicalnet" (`module.`).
Everything here is numpy.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vdt_jax.errors import UserError

KEY_STYLES = ("plain", "monai", "mmcls", "medicalnet")
# Leading key prefixes of wrapped models: DataParallel, mmcls classifiers.
STRIPPED_PREFIXES = ("module.", "backbone.")

# (collection, Flax leaf name) -> PyTorch tensor name.
_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_TORCH_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class WeightConversionError(UserError, ValueError):
    """A weight file or state dict that does not fit the model, or cannot be read."""


# --------------------------------------------------------------------------- names


def torch_module_name(flax_path: tuple[str, ...]) -> str:
    """PyTorch module name of a Flax module path: ("layer2_0", "downsample_bn") -> "layer2.0.downsample.1"."""
    parts = []
    for name in flax_path:
        if match := re.fullmatch(r"layer(\d+)_(\d+)", name):
            parts.append(f"layer{match[1]}.{match[2]}")
        elif name == "downsample_conv":
            parts.append("downsample.0")
        elif name == "downsample_bn":
            parts.append("downsample.1")
        else:
            parts.append(name)
    return ".".join(parts)


def module_order(flax_path: tuple[str, ...]) -> tuple:
    """Sort key giving torchvision's state-dict order: stem, layer1.0 ... layer4.N, fc."""
    key = []
    for name in flax_path:
        if match := re.fullmatch(r"layer(\d+)_(\d+)", name):
            key.append((1, int(match[1]), int(match[2])))
        elif match := re.fullmatch(r"(conv|bn)(\d+)", name):
            key.append((0, int(match[2]), match[1] == "bn"))
        elif name.startswith("downsample"):
            key.append((2, 0, name.endswith("bn")))
        else:  # the classifier and anything unforeseen go last, by name
            key.append((3, 0, name))
    return tuple(key)


def is_classifier(key: str) -> bool:
    return key.startswith("fc.")


def add_prefix(key: str, style: str) -> str:
    if style == "mmcls":
        return "head." + key if is_classifier(key) else "backbone." + key
    if style == "medicalnet":
        return "module." + key
    return key


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return "fc." + key[len("head.fc.") :] if key.startswith("head.fc.") else key


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {choices}")


# -------------------------------------------------------------------------- layouts


def to_torch_layout(value: np.ndarray) -> np.ndarray:
    """Flax kernel (D, H, W, I, O) -> (O, I, D, H, W), 2D (H, W, I, O) -> (O, I, H, W), Dense (in, out) -> (out, in)."""
    if value.ndim == 5:
        return value.transpose(4, 3, 0, 1, 2)
    if value.ndim == 4:  # the P3D group transform's grouped 1x1 conv (vdt_jax.weights.p3d_keys)
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:
        return value.T
    return value


def to_flax_layout(value: np.ndarray) -> np.ndarray:
    """The inverse of `to_torch_layout`."""
    if value.ndim == 5:
        return value.transpose(2, 3, 4, 1, 0)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    return to_torch_layout(np.empty(flax_shape, dtype=np.uint8)).shape


# ------------------------------------------------------------------ Flax -> PyTorch


@dataclasses.dataclass(frozen=True)
class Entry:
    """One Flax variable and the PyTorch key (without prefix) it maps to."""

    key: str
    collection: str
    path: tuple[str, ...]
    leaf: Any  # array, or anything with .shape and .dtype (jax.ShapeDtypeStruct)


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def variable_entries(variables: Mapping) -> list[Entry]:
    """Every variable of a vdt-jax ResNet tree, in torchvision's state-dict order."""
    unknown = sorted(set(variables) - {"params", "batch_stats"})
    if unknown:
        raise WeightConversionError(f"variables hold collections {unknown} that have no PyTorch counterpart")
    entries = []
    for collection in ("params", "batch_stats"):
        for path, leaf in flatten(variables.get(collection, {})):
            torch_leaf = _TORCH_LEAF.get((collection, path[-1]))
            if torch_leaf is None or len(path) < 2:
                raise WeightConversionError(f"no PyTorch name for the variable {collection}/{'/'.join(path)}")
            key = f"{torch_module_name(path[:-1])}.{torch_leaf}"
            entries.append(Entry(key, collection, path, leaf))
    rank = {name: i for i, name in enumerate(_TORCH_LEAF_ORDER)}
    entries.sort(key=lambda e: (module_order(e.path[:-1]), rank[e.key.rsplit(".", 1)[1]]))
    return entries


def to_torch_state_dict(
    variables: Mapping,
    *,
    keys: str = "plain",
    backbone_only: bool = False,
    downsample_bias: bool = False,
) -> dict[str, np.ndarray]:
    """A torchvision-style state dict (numpy, float32) of a vdt-jax ResNet.

    Args:
      variables: {"params": ..., "batch_stats": ...} of a `ResNet3D` (batch_stats
        absent for GroupNorm models); numpy or jax arrays.
      keys: key style, one of KEY_STYLES (see the module docstring).
      backbone_only: drop the classifier (`fc.*`).
      downsample_bias: add an all-zero `downsample.0.bias` to every shortcut
        conv, as MONAI's ResNet with its default `bias_downsample=True` expects.

    Returns:
      key -> float32 array in PyTorch layout; every BatchNorm also gets an int64
      0-d `num_batches_tracked` of 0.
    """
    check_choice(keys, KEY_STYLES, "key style")
    state: dict[str, np.ndarray] = {}
    for entry in variable_entries(variables):
        if backbone_only and is_classifier(entry.key):
            continue
        state[add_prefix(entry.key, keys)] = np.ascontiguousarray(to_torch_layout(np.asarray(entry.leaf, np.float32)))
        module = entry.key.rsplit(".", 1)[0]
        if entry.key.endswith("running_var"):
            state[add_prefix(f"{module}.num_batches_tracked", keys)] = np.array(0, dtype=np.int64)
        if downsample_bias and entry.key.endswith("downsample.0.weight"):
            out_channels = state[add_prefix(entry.key, keys)].shape[0]
            state[add_prefix(f"{module}.bias", keys)] = np.zeros(out_channels, np.float32)
    return state

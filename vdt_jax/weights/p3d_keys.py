"""P3D / MP3D weights: vdt-jax's pseudo-3D networks under the reference's PyTorch names.

The Flax modules (`vdt_jax.models.p3d`, `vdt_jax.models.group_transform`)
carry the reference's names, so the mapping is one to one:

  Flax variables                                  reference state dict
  params/conv1_custom/kernel (1, 7, 7, 1, 64)     conv1_custom.weight (64, 1, 1, 7, 7)
  params/norm1/{scale, bias}                      norm1.{weight, bias}
  batch_stats/norm1/{mean, var}                   norm1.{running_mean, running_var} (+ num_batches_tracked)
  params/layer2_0/conv1..conv4/kernel             layer2.0.conv1..conv4.weight
  params/layer2_0/norm_1..norm_4/...              layer2.0.norm_1..norm_4.*
  params/layer2_0/downsample_conv, downsample_bn  layer2.0.downsample.0, .downsample.1
  params/groupconv_1/kernel (1, 1, D, C)          groupconv_1.weight (C, D, 1, 1)
  params/conv3d_all_1/kernel (D, 1, 1, C, C)      conv3d_all_1.weight (C, C, D, 1, 1)
  params/fc/kernel (in, out), fc/bias             fc.weight (out, in), fc.bias (vdt-jax's classifier)

A `GroupTransformBackbone` tree holds the network under `backbone`; that
level has no counterpart in the reference (its GTM lives in the backbone).

Key styles: "mp3d" and "plain" are the reference backbone's `state_dict()`
keys exactly; "mmcls" prefixes `backbone.` and names the classifier
`head.fc.*` (the layout of an mm* checkpoint, whose `backbone.` the
reference's loader strips). MONAI and MedicalNet have no pseudo-3D network.
Importing goes through `vdt_jax.weights.load`, which takes the names from
`variable_entries` here whenever the model is a P3D (`is_p3d`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from vdt_jax.errors import UserError
from vdt_jax.weights.keys import (
    Entry,
    WeightConversionError,
    add_prefix,
    flatten,
    is_classifier,
    to_torch_layout,
)

KEY_STYLES = ("mp3d", "plain", "mmcls")
STEM_CONV = "conv1_custom"
WRAPPER_SCOPE = "backbone"  # where a GroupTransformBackbone keeps the P3D
GTM_MODULES = re.compile(r"(groupconv|conv3d_all)_\d+")
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_MODULE_NAMES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def is_p3d(variables: Mapping) -> bool:
    """True for the variables (or shapes) of a P3D / MP3D network, bare or inside a group transform wrapper."""
    params = variables.get("params") or {}
    return STEM_CONV in params or STEM_CONV in (params.get(WRAPPER_SCOPE) or {})


def torch_module_name(flax_path: tuple[str, ...]) -> str:
    """("backbone", "layer2_0", "downsample_bn") -> "layer2.0.downsample.1"."""
    parts = []
    for name in flax_path:
        if name == WRAPPER_SCOPE and not parts:
            continue
        if match := re.fullmatch(r"layer(\d+)_(\d+)", name):
            parts.append(f"layer{match[1]}.{match[2]}")
        else:
            parts.append(_MODULE_NAMES.get(name, name))
    return ".".join(parts)


def _order(torch_key: str) -> tuple:
    """The reference's state-dict order: stem, layer1.0 ... layer4.N (shortcut first in each block), GTM, fc."""
    module, leaf = torch_key.rsplit(".", 1)
    rank = _LEAF_ORDER.index(leaf)
    if match := re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", module):
        inner = match[3]
        if inner.startswith("downsample"):  # the reference block registers its shortcut first
            within: tuple = (0, inner)
        else:  # conv1, norm_1, conv2, norm_2, ...
            within = (1, int(re.search(r"\d+", inner)[0]), "norm" in inner)
        return (1, int(match[1]), int(match[2]), within, rank)
    if module in (STEM_CONV, "norm1"):
        return (0, module == "norm1", rank)
    return (3 if is_classifier(torch_key) else 2, module, rank)


def variable_entries(variables: Mapping) -> list[Entry]:
    """Every variable of a P3D (or GTM-wrapped P3D) tree with its reference key, in the reference's order."""
    unknown = sorted(set(variables) - {"params", "batch_stats"})
    if unknown:
        raise WeightConversionError(f"variables hold collections {unknown} that have no PyTorch counterpart")
    entries = []
    for collection in ("params", "batch_stats"):
        for path, leaf in flatten(variables.get(collection) or {}):
            torch_leaf = _LEAF_TO_TORCH.get((collection, path[-1]))
            if torch_leaf is None:
                raise WeightConversionError(f"no reference name for the variable {collection}/{'/'.join(path)}")
            entries.append(Entry(f"{torch_module_name(path[:-1])}.{torch_leaf}", collection, path, leaf))
    return sorted(entries, key=lambda entry: _order(entry.key))


def to_torch_state_dict(variables: Mapping, *, keys: str = "mp3d", backbone_only: bool = False) -> dict[str, np.ndarray]:
    """The reference state dict (numpy float32, PyTorch layout) of a P3D or GTM-wrapped P3D.

    Args:
      variables: {"params": ..., "batch_stats": ...} (no batch_stats with GroupNorm).
      keys: "mp3d"/"plain" (the reference backbone's keys) or "mmcls" (`backbone.`, `head.fc.*`).
      backbone_only: drop the classifier (`fc.*`).

    Returns:
      key -> array, in the reference's order; each BatchNorm also gets an int64
      0-d `num_batches_tracked` of 0.
    """
    check_key_style(keys)
    state: dict[str, np.ndarray] = {}
    for entry in variable_entries(variables):
        if backbone_only and is_classifier(entry.key):
            continue
        value = np.asarray(entry.leaf, np.float32)
        state[add_prefix(entry.key, keys)] = np.ascontiguousarray(to_torch_layout(value))
        if entry.key.endswith(".running_var"):
            state[add_prefix(entry.key.replace(".running_var", ".num_batches_tracked"), keys)] = np.array(0, np.int64)
    return state


def check_key_style(keys: str, downsample_bias: bool = False) -> None:
    """Refuse, saying why, the key styles and options that cannot express a pseudo-3D network."""
    if keys not in KEY_STYLES:
        raise UserError(
            f"key style {keys!r} cannot express a P3D / MP3D network ({keys} has no pseudo-3D network); "
            f"use one of {KEY_STYLES}: mp3d (= plain) gives the reference backbone's keys, mmcls adds `backbone.`"
        )
    if downsample_bias:
        raise UserError("--downsample_bias is for MONAI's ResNet; a P3D / MP3D export has no use for it")


def architecture(keys: list[str]) -> str:
    """A readable name for the pseudo-3D network plain reference keys describe, for error messages."""
    blocks: dict[int, set[int]] = {}
    for key in keys:
        if match := re.match(r"layer(\d+)\.(\d+)\.", key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    sizes = tuple(len(blocks.get(stage, ())) for stage in range(1, max(blocks, default=4) + 1))
    variants = {(3, 4, 6, 3): "63 or 34ba", (2, 2, 2, 2): "18ba or 18", (3, 4, 23, 3): "131", (3, 8, 36, 3): "199"}
    return f"P3D / MP3D (blocks {sizes}, p3d_variant {variants.get(sizes, '?')})"

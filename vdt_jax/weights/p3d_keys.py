"""P3D / MP3D weights between vdt-jax (Flax) and the reference's PyTorch state dict.

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
Conversions are numpy-only; `from_torch_state_dict` is strict and names every
missing, unexpected or misshapen tensor.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_MODULE_NAMES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
WRAPPER_SCOPE = "backbone"


class P3DKeyError(ValueError):
    """A state dict that does not fit the P3D model (names every offending key)."""


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
    if module in ("conv1_custom", "norm1"):
        return (0, module == "norm1", rank)
    return (3 if module.startswith("fc") else 2, module, rank)


def to_torch_layout(value: np.ndarray) -> np.ndarray:
    """Conv3D (D, H, W, I, O) -> (O, I, D, H, W); group conv (1, 1, D, C) -> (C, D, 1, 1); Dense transposed."""
    if value.ndim == 5:
        return value.transpose(4, 3, 0, 1, 2)
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value.T if value.ndim == 2 else value


def to_flax_layout(value: np.ndarray) -> np.ndarray:
    """The inverse of `to_torch_layout`."""
    if value.ndim == 5:
        return value.transpose(2, 3, 4, 1, 0)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value.T if value.ndim == 2 else value


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def flax_to_torch_keys(variables: Mapping) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{reference key: (collection, Flax path)} for every variable, in the reference's order."""
    keys = {}
    for collection, tree in variables.items():
        for path, _ in _flatten(tree):
            leaf = _LEAF_TO_TORCH.get((collection, path[-1]))
            if leaf is None:
                raise P3DKeyError(f"no reference name for the variable {collection}/{'/'.join(path)}")
            keys[f"{torch_module_name(path[:-1])}.{leaf}"] = (collection, path)
    return {key: keys[key] for key in sorted(keys, key=_order)}


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def to_torch_state_dict(variables: Mapping, *, prefix: str = "") -> dict[str, np.ndarray]:
    """The reference state dict (numpy float32, PyTorch layout) of a P3D or GTM-wrapped P3D.

    Args:
      variables: {"params": ..., "batch_stats": ...} (no batch_stats with GroupNorm).
      prefix: prepended to every key (e.g. "backbone." for an mmdet detector's file).

    Returns:
      key -> array, in the reference's order; each BatchNorm also gets an int64
      0-d `num_batches_tracked` of 0.
    """
    state: dict[str, np.ndarray] = {}
    for key, (collection, path) in flax_to_torch_keys(variables).items():
        value = np.asarray(_get(variables[collection], path), np.float32)
        state[prefix + key] = np.ascontiguousarray(to_torch_layout(value))
        if key.endswith(".running_var"):
            state[prefix + key.replace(".running_var", ".num_batches_tracked")] = np.array(0, np.int64)
    return dict(sorted(state.items(), key=lambda item: _order(item[0][len(prefix) :])))


def from_torch_state_dict(state_dict: Mapping[str, Any], template: Mapping, *, prefix: str = "") -> dict:
    """Variables shaped like `template` (from `model.init` or `jax.eval_shape`) filled from a reference state dict.

    Args:
      state_dict: key -> array (numpy or torch tensors on CPU).
      template: the target model's variables; only names, shapes and dtypes are used.
      prefix: a prefix every file key carries (stripped; keys without it are unexpected).

    Raises:
      P3DKeyError: listing every missing, unexpected and misshapen tensor; nothing loads partially.
    """
    tensors = {}
    for key, value in state_dict.items():
        plain = key[len(prefix) :] if key.startswith(prefix) else "(no prefix) " + key
        if not plain.endswith(".num_batches_tracked"):
            tensors[plain] = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    variables: dict = {}
    missing, mismatched = [], []
    for key, (collection, path) in flax_to_torch_keys(template).items():
        leaf = _get(template[collection], path)
        expected = to_torch_layout(np.empty(leaf.shape, np.uint8)).shape
        if key not in tensors:
            missing.append(f"{key} {expected}")
            continue
        value = tensors.pop(key)
        if value.shape != expected:
            mismatched.append(f"{key}: file {value.shape}, model {expected}")
            continue
        value = to_flax_layout(value)
        node = variables.setdefault(collection, {})
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value.astype(leaf.dtype)
    _raise_problems(missing, [f"{key} {tensors[key].shape}" for key in sorted(tensors)], mismatched)
    return variables


def _raise_problems(missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
    lines = []
    for title, items in (("missing from the file", missing), ("unexpected in the file", unexpected),
                         ("shape mismatches (PyTorch layout)", mismatched)):  # fmt: skip
        if items:
            lines += [f"{len(items)} {title}:", *(f"  {item}" for item in items[:12])]
            lines += [f"  ... and {len(items) - 12} more"] if len(items) > 12 else []
    if lines:
        raise P3DKeyError("the state dict does not fit the P3D model; nothing was loaded.\n" + "\n".join(lines))

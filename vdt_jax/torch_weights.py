"""Convert 3D ResNet weights between vdt-jax (Flax) and PyTorch state dicts.

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

Everything here is numpy: `.safetensors` files are read and written without
PyTorch; only `.pth` files import torch, lazily. `.pth` files are read with
`torch.load(weights_only=True)`, which refuses pickles that would run code.

Loading a PyTorch file fills a template variables tree (from `model.init`, or
`jax.eval_shape` of it when nothing has to stay newly initialised), checks
every shape, and returns a `LoadReport` of what was loaded, adapted, skipped
or left unused. It never loads part of a model silently: missing, unexpected
or misshapen weights raise `WeightConversionError` naming every offending key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

KEY_STYLES = ("plain", "monai", "mmcls", "medicalnet")
REDUCTIONS = ("sum", "mean")
TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
SAFETENSORS_EXTENSIONS = (".safetensors",)
# Containers that mmcls / MedicalNet / training scripts nest the state dict in.
NESTING_KEYS = ("state_dict", "model")
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
# (block type, stage sizes) -> ResNet depth, to name architectures in errors.
_RESNET_DEPTHS = {
    ("basic", (1, 1, 1, 1)): 10,
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
    ("bottleneck", (3, 24, 36, 3)): 200,
}
_MAX_LISTED = 12  # offending keys listed per kind of problem


class WeightConversionError(ValueError):
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


def _module_order(flax_path: tuple[str, ...]) -> tuple:
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


def _is_classifier(key: str) -> bool:
    return key.startswith("fc.")


def _add_prefix(key: str, style: str) -> str:
    if style == "mmcls":
        return "head." + key if _is_classifier(key) else "backbone." + key
    if style == "medicalnet":
        return "module." + key
    return key


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return "fc." + key[len("head.fc.") :] if key.startswith("head.fc.") else key


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {choices}")


# -------------------------------------------------------------------------- layouts


def to_torch_layout(value: np.ndarray) -> np.ndarray:
    """Flax conv kernel (D, H, W, I, O) -> (O, I, D, H, W); Dense kernel (in, out) -> (out, in)."""
    if value.ndim == 5:
        return value.transpose(4, 3, 0, 1, 2)
    if value.ndim == 2:
        return value.T
    return value


def to_flax_layout(value: np.ndarray) -> np.ndarray:
    """The inverse of `to_torch_layout`."""
    if value.ndim == 5:
        return value.transpose(2, 3, 4, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    return to_torch_layout(np.empty(flax_shape, dtype=np.uint8)).shape


# ------------------------------------------------------------------ Flax -> PyTorch


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One Flax variable and the PyTorch key (without prefix) it maps to."""

    key: str
    collection: str
    path: tuple[str, ...]
    leaf: Any  # array, or anything with .shape and .dtype (jax.ShapeDtypeStruct)


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def _entries(variables: Mapping) -> list[_Entry]:
    """Every variable of a vdt-jax ResNet tree, in torchvision's state-dict order."""
    unknown = sorted(set(variables) - {"params", "batch_stats"})
    if unknown:
        raise WeightConversionError(f"variables hold collections {unknown} that have no PyTorch counterpart")
    entries = []
    for collection in ("params", "batch_stats"):
        for path, leaf in _flatten(variables.get(collection, {})):
            torch_leaf = _TORCH_LEAF.get((collection, path[-1]))
            if torch_leaf is None or len(path) < 2:
                raise WeightConversionError(f"no PyTorch name for the variable {collection}/{'/'.join(path)}")
            key = f"{torch_module_name(path[:-1])}.{torch_leaf}"
            entries.append(_Entry(key, collection, path, leaf))
    rank = {name: i for i, name in enumerate(_TORCH_LEAF_ORDER)}
    entries.sort(key=lambda e: (_module_order(e.path[:-1]), rank[e.key.rsplit(".", 1)[1]]))
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
    _check_choice(keys, KEY_STYLES, "key style")
    state: dict[str, np.ndarray] = {}
    for entry in _entries(variables):
        if backbone_only and _is_classifier(entry.key):
            continue
        state[_add_prefix(entry.key, keys)] = np.ascontiguousarray(to_torch_layout(np.asarray(entry.leaf, np.float32)))
        module = entry.key.rsplit(".", 1)[0]
        if entry.key.endswith("running_var"):
            state[_add_prefix(f"{module}.num_batches_tracked", keys)] = np.array(0, dtype=np.int64)
        if downsample_bias and entry.key.endswith("downsample.0.weight"):
            out_channels = state[_add_prefix(entry.key, keys)].shape[0]
            state[_add_prefix(f"{module}.bias", keys)] = np.zeros(out_channels, np.float32)
    return state


# ----------------------------------------------------------------------- file I/O


def _import_torch(purpose: str):
    try:
        import torch  # noqa: PLC0415 (kept lazy: torch is optional)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs PyTorch (pip install 'vdt-jax[torch]'); .safetensors files work without it"
        ) from error
    return torch


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def write_state_dict(
    state_dict: Mapping[str, np.ndarray], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a numpy state dict as `.safetensors` (no torch needed) or `.pth`/`.pt` (torch.save)."""
    path = os.fspath(path)
    extension = _extension(path)
    arrays = {key: np.ascontiguousarray(value) for key, value in state_dict.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if extension in SAFETENSORS_EXTENSIONS:
        from safetensors.numpy import save_file  # noqa: PLC0415

        save_file(arrays, path, metadata={"format": "pt", **(metadata or {})})
    elif extension in TORCH_EXTENSIONS:
        torch = _import_torch(f"writing {path}")
        torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, path)
    else:
        raise WeightConversionError(
            f"{path}: unknown weight file extension {extension!r}; use .safetensors or one of {TORCH_EXTENSIONS}"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.safetensors` or PyTorch (`.pth`/`.pt`/`.bin`) file's state dict, as numpy arrays.

    PyTorch files are unpickled with `weights_only=True` (no code runs) and may
    nest the state dict under "state_dict" or "model" (mmcls, MedicalNet).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weight file at {path}")
    extension = _extension(path)
    if extension in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path)
    if extension in TORCH_EXTENSIONS:
        return _read_torch(path)
    raise WeightConversionError(
        f"{path}: unknown weight file extension {extension!r}; expected .safetensors or one of {TORCH_EXTENSIONS}"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file  # noqa: PLC0415

    try:
        return dict(load_file(path))
    except Exception as error:  # SafetensorError is not exported under a stable name
        raise WeightConversionError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error


def _read_torch(path: str) -> dict[str, np.ndarray]:
    torch = _import_torch(f"reading {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightConversionError(
            f"{path}: refused to unpickle: the file is corrupt or holds objects other than tensors and plain "
            f"containers, which weights_only=True loading does not execute ({_unpickling_reason(error)})"
        ) from error
    except Exception as error:  # truncated zip archives, legacy-format EOFs
        raise WeightConversionError(f"{path}: not a readable PyTorch file (truncated or corrupt?): {error}") from error
    state = _unwrap_state_dict(obj, path)
    return {key: _tensor_to_numpy(torch, value) for key, value in state.items()}


def _unpickling_reason(error: Exception) -> str:
    """The specific line of torch's weights-only error, without its advice to disable the check."""
    lines = [line.strip() for line in str(error).splitlines()[1:]]
    lines = [line.split("use case:")[-1].strip() for line in lines if line and not line.startswith("Check the doc")]
    return " ".join(line for line in lines if line) or str(error).splitlines()[0]


def _unwrap_state_dict(obj: Any, path: str) -> Mapping:
    """The state dict in a loaded PyTorch file: the object itself or its "state_dict"/"model" entry."""
    if not isinstance(obj, Mapping):
        raise WeightConversionError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping from parameter names to tensors)"
        )
    for nesting_key in NESTING_KEYS:
        if isinstance(obj.get(nesting_key), Mapping):
            return _unwrap_state_dict(obj[nesting_key], f"{path}[{nesting_key!r}]")
    not_tensors = {key: type(value).__name__ for key, value in obj.items() if not hasattr(value, "detach")}
    if not_tensors or not obj:
        listed = ", ".join(f"{key!r}: {kind}" for key, kind in list(not_tensors.items())[:_MAX_LISTED])
        raise WeightConversionError(
            f"{path}: not a state dict: expected parameter names mapped to tensors (or one nested under "
            f"{' or '.join(NESTING_KEYS)}), found {len(obj)} entries"
            + (f", non-tensors {{{listed}}}" if listed else "")
        )
    return obj


def _tensor_to_numpy(torch, tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def export_torch_weights(
    variables: Mapping,
    path: str | os.PathLike,
    *,
    keys: str = "plain",
    backbone_only: bool = False,
    downsample_bias: bool = False,
) -> dict[str, np.ndarray]:
    """Convert with `to_torch_state_dict` and write `path` (.safetensors or .pth); returns the state dict."""
    state = to_torch_state_dict(variables, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias)
    write_state_dict(state, path, metadata={"producer": "vdt-jax", "keys": keys})
    return state


# ------------------------------------------------------------------ PyTorch -> Flax


@dataclasses.dataclass
class LoadReport:
    """What `from_torch_state_dict` did with each weight.

    Attributes:
      source: where the weights came from.
      loaded: PyTorch keys copied into the model (after the layout change).
      adapted: PyTorch key -> how it was changed to fit (first-conv channels).
      skipped: PyTorch key of a model weight -> why it was left at its initial
        value (newly initialised), e.g. a classifier with another class count.
      unused: PyTorch key in the file -> why it was deliberately not used
        (BatchNorm step counters, all-zero shortcut biases, a dropped classifier).
    """

    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    adapted: dict[str, str] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    unused: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        lines += [f"  adapted {key}: {why}" for key, why in self.adapted.items()]
        lines += [f"  newly initialised {key}: {why}" for key, why in self.skipped.items()]
        reasons: dict[str, list[str]] = {}
        for key, why in self.unused.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            listed = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            lines.append(f"  unused {listed}: {why}")
        return "\n".join(lines)


@dataclasses.dataclass
class _Problems:
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[str] = dataclasses.field(default_factory=list)
    other: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched or self.other)


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    template: Mapping,
    *,
    in_channels_reduction: str = "sum",
    source: str = "state dict",
) -> tuple[dict, LoadReport]:
    """Fill a vdt-jax ResNet's variables from a torchvision-style PyTorch state dict.

    Args:
      state_dict: key -> numpy array (or anything `np.asarray` takes), keys
        plain or prefixed with `module.`/`backbone.`, classifier `fc.*` or `head.fc.*`.
      template: the target model's variables, from `model.init` (or from
        `jax.eval_shape(model.init, ...)` when the classifier will load too).
      in_channels_reduction: how a first conv with another number of input
        channels is adapted: "sum" or "mean" over the file's input channels (a
        3-channel kernel becomes 1-channel); with k > 1 model channels the result
        is repeated and divided by k, so k identical channels see the reduced kernel.
      source: name of the origin, for messages.

    Returns:
      (variables, report): numpy variables shaped like `template` and a `LoadReport`.

    Raises:
      WeightConversionError: listing missing, unexpected and misshapen keys, or
        non-zero shortcut biases; nothing is loaded partially.
    """
    _check_choice(in_channels_reduction, REDUCTIONS, "in_channels_reduction")
    tensors, report = _normalised_tensors(state_dict, source)
    entries = _entries(template)
    problems = _Problems()
    skip_classifier = _classifier_mismatch(tensors, entries)
    values: list[tuple[_Entry, np.ndarray]] = []
    for entry in entries:
        if entry.key not in tensors:
            problems.missing.append(f"{entry.key} {_torch_shape(entry.leaf.shape)}")
        elif entry.key in skip_classifier:
            report.skipped[entry.key] = skip_classifier[entry.key]
            report.unused[entry.key] = skip_classifier[entry.key]
            tensors.pop(entry.key)
            values.append((entry, _initial_value(entry)))
        else:
            value = _fit(entry, np.asarray(tensors.pop(entry.key)), in_channels_reduction, report, problems)
            if value is not None:
                values.append((entry, value))
                report.loaded.append(entry.key)
    _sort_leftovers(tensors, entries, report, problems)
    if problems:
        raise WeightConversionError(_describe_problems(problems, source, _plain_keys(state_dict), entries))
    return _unflatten(values), report


def load_torch_weights(
    path: str | os.PathLike, template: Mapping, *, in_channels_reduction: str = "sum"
) -> tuple[dict, LoadReport]:
    """`read_state_dict(path)` then `from_torch_state_dict`; logs the report's summary."""
    variables, report = from_torch_state_dict(
        read_state_dict(path), template, in_channels_reduction=in_channels_reduction, source=os.fspath(path)
    )
    logger.info("%s", report.summary())
    return variables, report


def _plain_keys(state_dict: Mapping[str, Any]) -> list[str]:
    return [_strip_prefixes(key) for key in state_dict]


def _normalised_tensors(state_dict: Mapping[str, Any], source: str) -> tuple[dict[str, Any], LoadReport]:
    """Keys without prefixes, BatchNorm step counters set aside in a fresh report."""
    report = LoadReport(source=source)
    tensors: dict[str, Any] = {}
    for original, value in state_dict.items():
        key = _strip_prefixes(original)
        if key in tensors:
            raise WeightConversionError(
                f"{source}: keys collide once prefixes are stripped: {key!r} (from {original!r})"
            )
        if key.endswith(".num_batches_tracked"):
            report.unused[key] = "BatchNorm step counter, not a weight"
        else:
            tensors[key] = value
    return tensors, report


def _classifier_mismatch(tensors: Mapping[str, Any], entries: list[_Entry]) -> dict[str, str]:
    """{fc key: reason} when the file's classifier has another class count than the model's."""
    model_fc = {e.key: e.leaf.shape for e in entries if _is_classifier(e.key)}
    if "fc.weight" not in model_fc or "fc.weight" not in tensors:
        return {}
    file_classes, file_features = np.shape(tensors["fc.weight"])
    model_features, model_classes = model_fc["fc.weight"]
    if file_features != model_features or file_classes == model_classes:
        return {}
    why = f"classifier has {file_classes} classes in the file, {model_classes} in the model"
    return {key: why for key in model_fc}


def _initial_value(entry: _Entry) -> np.ndarray:
    if not hasattr(entry.leaf, "__array__"):
        raise WeightConversionError(
            f"{entry.key} must stay newly initialised but the template holds only its shape "
            "(jax.eval_shape); pass variables from model.init instead"
        )
    return np.asarray(entry.leaf)


def _fit(entry: _Entry, value: np.ndarray, reduction: str, report: LoadReport, problems: _Problems):
    """The file's tensor in Flax layout and the template's dtype, or None after recording a mismatch."""
    expected = _torch_shape(entry.leaf.shape)
    if value.shape != expected and entry.key == "conv1.weight" and _adaptable(value.shape, expected):
        value, how = _adapt_in_channels(value, expected[1], reduction)
        report.adapted[entry.key] = how
        logger.info("%s: %s", entry.key, how)
    if value.shape != expected:
        problems.mismatched.append(f"{entry.key}: file {tuple(value.shape)}, model {expected}")
        return None
    return to_flax_layout(value).astype(entry.leaf.dtype)


def _adaptable(file_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> bool:
    """Same conv up to the number of input channels."""
    same_rank = len(file_shape) == len(model_shape) == 5
    return same_rank and file_shape[0] == model_shape[0] and file_shape[2:] == model_shape[2:]


def _adapt_in_channels(kernel: np.ndarray, channels: int, reduction: str) -> tuple[np.ndarray, str]:
    """(O, I, D, H, W) -> (O, channels, D, H, W) by summing or averaging over I."""
    reduced = kernel.sum(axis=1, keepdims=True) if reduction == "sum" else kernel.mean(axis=1, keepdims=True)
    how = f"{kernel.shape[1]} input channels {'summed' if reduction == 'sum' else 'averaged'} to 1"
    if channels > 1:
        reduced = np.repeat(reduced / channels, channels, axis=1)
        how += f", repeated to {channels} and divided by {channels}"
    return reduced.astype(kernel.dtype), how


def _sort_leftovers(tensors: dict[str, Any], entries: list[_Entry], report: LoadReport, problems: _Problems) -> None:
    """File keys no model weight took: tolerated (reported unused) or unexpected."""
    shortcut_convs = {e.key.rsplit(".", 1)[0] for e in entries if e.key.endswith("downsample.0.weight")}
    has_classifier = any(_is_classifier(e.key) for e in entries)
    nonzero_biases = []
    for key in list(tensors):
        module = key.rsplit(".", 1)[0]
        if key.endswith(".bias") and module in shortcut_convs:
            if np.any(np.asarray(tensors[key]) != 0):
                nonzero_biases.append(key)
            else:
                report.unused[key] = "all-zero shortcut conv bias (MONAI bias_downsample=True)"
        elif _is_classifier(key) and not has_classifier:
            report.unused[key] = "the model has no classifier (backbone)"
        else:
            problems.unexpected.append(f"{key} {tuple(np.shape(tensors[key]))}")
            continue
        tensors.pop(key)
    if nonzero_biases:
        problems.other.append(
            f"shortcut conv biases that are not all zeros: {', '.join(nonzero_biases)}. vdt-jax shortcut convs "
            "have no bias, so this model cannot be reproduced (MONAI's default bias_downsample=True gives that "
            "conv a randomly initialised, trainable bias; build MONAI models with bias_downsample=False)"
        )


def _describe_problems(problems: _Problems, source: str, file_keys: list[str], entries: list[_Entry]) -> str:
    lines = [f"{source} does not fit the model; nothing was loaded."]
    file_arch, model_arch = _architecture(file_keys), _architecture([e.key for e in entries])
    if file_arch != model_arch:
        lines.append(f"The file holds a {file_arch}, the model is a {model_arch}.")
    if any("downsample" in e.key for e in entries) and not any("downsample" in key for key in file_keys):
        lines.append(
            "The file has no shortcut (downsample.*) weights: it looks like a MedicalNet-style ResNet with the "
            "parameter-free type-A shortcut, while vdt-jax ResNets use type-B shortcuts (1x1x1 conv + norm). "
            "Such weights cannot be loaded exactly."
        )
    for title, items in (
        ("missing from the file", problems.missing),
        ("unexpected in the file", problems.unexpected),
        ("shape mismatches (PyTorch layout)", problems.mismatched),
        ("other problems", problems.other),
    ):
        if items:
            lines.append(f"{len(items)} {title}:")
            lines += [f"  {item}" for item in items[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
    return "\n".join(lines)


def _architecture(keys: list[str]) -> str:
    """A readable name for the ResNet a set of plain keys describes, e.g. "ResNet-34 (basic blocks (3, 4, 6, 3))"."""
    blocks: dict[int, set[int]] = {}
    for key in keys:
        if match := re.match(r"layer(\d+)\.(\d+)\.", key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    sizes = tuple(len(blocks.get(stage, ())) for stage in range(1, max(blocks, default=4) + 1))
    kind = "bottleneck" if any(re.match(r"layer\d+\.\d+\.conv3\.", key) for key in keys) else "basic"
    depth = _RESNET_DEPTHS.get((kind, sizes))
    return f"{f'ResNet-{depth}' if depth else 'ResNet'} ({kind} blocks {sizes})"


def _unflatten(values: list[tuple[_Entry, np.ndarray]]) -> dict:
    tree: dict = {}
    for entry, value in values:
        node = tree.setdefault(entry.collection, {})
        for name in entry.path[:-1]:
            node = node.setdefault(name, {})
        node[entry.path[-1]] = value
    return tree


# ----------------------------------------------------------------------------- MONAI


def monai_code(
    depth: int,
    *,
    num_classes: int | None = None,
    in_channels: int = 1,
    stem_kernel: int | tuple[int, int, int] = 7,
    stem_stride: bool = True,
    depth_stride: bool = False,
    stage_strides: tuple[int, ...] = (1, 2, 2, 2),
    widths: tuple[int, ...] = (64, 128, 256, 512),
    norm: str = "batch",
    downsample_bias: bool = False,
    keys: str = "plain",
    path: str = "weights.pth",
) -> str:
    """Python code that builds the MONAI ResNet matching a vdt-jax ResNet as `model` and loads `path` strictly.

    MONAI's ResNet fixes the max-pool and stage strides at 2 on every axis, so
    models that do not stride depth get those strides patched after construction.

    Raises:
      ValueError: for models MONAI's ResNet cannot express (GroupNorm, stride in
        the first stage, widths that are no multiple of 64/128/256/512).
    """
    _check_monai_expressible(depth, norm, stage_strides, widths)
    block_conv = "conv2" if depth >= 50 else "conv1"  # the conv MONAI strides in a block

    def stride(s: int) -> tuple[int, int, int]:
        return (s if depth_stride else 1, s, s)

    stem = stride(2 if stem_stride else 1)
    args = [
        "spatial_dims=3",
        f"n_input_channels={in_channels}",
        f"conv1_t_size={stem_kernel}",
        f"conv1_t_stride={stem[0] if len(set(stem)) == 1 else stem}",
        f"bias_downsample={downsample_bias}",
    ]
    if widths[0] != 64:
        args.append(f"widen_factor={widths[0] / 64}")
    args.append(f"num_classes={num_classes}" if num_classes is not None else "feed_forward=False")
    lines = ["import torch", f"from monai.networks.nets import resnet{depth}", ""]
    lines.append(f"model = resnet{depth}({', '.join(args)})")
    patches = [f"model.maxpool.stride = {stride(2)}"] if stride(2) != (2, 2, 2) else []
    for stage in (2, 3, 4):
        stage_stride = stride(stage_strides[stage - 1])
        if stage_stride != (2, 2, 2):
            patches.append(f"model.layer{stage}[0].{block_conv}.stride = {stage_stride}")
            patches.append(f"model.layer{stage}[0].downsample[0].stride = {stage_stride}")
    if patches:
        lines.append("# MONAI strides the max-pool and stages by 2 on every axis; match the vdt-jax strides.")
        lines += patches
    lines += _monai_load_lines(path, keys)
    return "\n".join(lines) + "\n"


def _check_monai_expressible(depth: int, norm: str, stage_strides: tuple[int, ...], widths: tuple[int, ...]) -> None:
    if depth not in (10, 18, 34, 50, 101, 152):
        raise ValueError(f"MONAI has no ResNet of depth {depth}")
    if norm != "batch":
        raise ValueError(f"MONAI's ResNet (1.6) applies `norm` to the stem only; no MONAI ResNet matches norm={norm!r}")
    if stage_strides[0] != 1:
        raise ValueError("MONAI's first stage has no shortcut conv to stride; stage_strides[0] must be 1")
    if any(w * 64 != widths[0] * base for w, base in zip(widths, (64, 128, 256, 512))):
        raise ValueError(f"MONAI's widen_factor cannot express widths {tuple(widths)}")


def _monai_load_lines(path: str, keys: str) -> list[str]:
    if _extension(path) in SAFETENSORS_EXTENSIONS:
        lines = ["from safetensors.torch import load_file", f"state = load_file({path!r})"]
    else:
        lines = [f"state = torch.load({path!r}, map_location='cpu', weights_only=True)"]
    if keys == "medicalnet":
        lines.append("state = {k.removeprefix('module.'): v for k, v in state.items()}")
    elif keys == "mmcls":
        lines.append("state = {k.removeprefix('backbone.').replace('head.fc.', 'fc.'): v for k, v in state.items()}")
    return lines + ["model.load_state_dict(state, strict=True)", "model.eval()"]

"""Load a PyTorch state dict into a vdt-jax ResNet's variables, checking every tensor, with one report.

`from_torch_state_dict` fills a template variables tree (from `model.init`, or
`jax.eval_shape` of it when nothing has to stay newly initialised), checks every
shape, and returns a `LoadReport` of what was loaded, adapted, newly
initialised or left unused. It never loads part of a model silently: missing,
unexpected or misshapen weights raise `WeightConversionError` naming every
offending key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vdt_jax.weights import p3d_keys
from vdt_jax.weights.files import read_state_dict
from vdt_jax.weights.keys import (
    Entry,
    WeightConversionError,
    check_choice,
    is_classifier,
    strip_prefixes,
    to_flax_layout,
    torch_shape,
    variable_entries,
)

logger = logging.getLogger(__name__)

REDUCTIONS = ("sum", "mean")
CLASSIFIER = "fc"
STEM_CONVS = ("conv1.weight", f"{p3d_keys.STEM_CONV}.weight")  # ResNet, P3D: adaptable to other input channels
BACKBONE_PREFIX = "backbone."  # mm* checkpoints (mmcls, mmdet, mmseg): the network under it, heads beside it
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
_LAYER1_SHORTCUT = "layer1.0.downsample."


@dataclasses.dataclass
class LoadReport:
    """What loading weights into a model did, tensor by tensor (printed, and saved by fine-tuning runs).

    Attributes:
      source: the checkpoint or weight file.
      target: where in the model the backbone went ("" = top level, or "encoder").
      loaded: PyTorch-style names of the tensors copied from the source.
      adapted: name -> how it was changed to fit (first-conv input channels).
      new: model module -> why it was left newly initialised (a classifier with
        another class count, a decoder the source does not have).
      unused: source tensor -> why it was deliberately not used (BatchNorm step
        counters, all-zero shortcut biases, a classifier that was not loaded).
    """

    source: str
    target: str = ""
    loaded: list[str] = dataclasses.field(default_factory=list)
    adapted: dict[str, str] = dataclasses.field(default_factory=dict)
    new: dict[str, str] = dataclasses.field(default_factory=dict)
    unused: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        where = f" into {self.target}/" if self.target else ""
        lines = [f"Initialised from {self.source}: loaded {len(self.loaded)} tensors{where}"]
        lines += [f"  adapted {name}: {how}" for name, how in self.adapted.items()]
        lines += [f"  newly initialised {name}: {why}" for name, why in self.new.items()]
        reasons: dict[str, list[str]] = {}
        for name, why in self.unused.items():
            reasons.setdefault(why, []).append(name)
        for why, names in reasons.items():
            listed = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
            lines.append(f"  unused {listed}: {why}")
        return "\n".join(lines)

    def details(self) -> str:
        """`summary()` plus every loaded tensor by name (what the fine-tuning tasks save in the workdir)."""
        prefix = f"{self.target}/" if self.target else ""
        return self.summary() + "\nloaded:\n" + "".join(f"  {prefix}{name}\n" for name in self.loaded)


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
    check_choice(in_channels_reduction, REDUCTIONS, "in_channels_reduction")
    tensors, report = _normalised_tensors(state_dict, source)
    entries = p3d_keys.variable_entries(template) if p3d_keys.is_p3d(template) else variable_entries(template)
    problems = _Problems()
    skip_classifier = _classifier_mismatch(tensors, entries)
    values: list[tuple[Entry, np.ndarray]] = []
    for entry in entries:
        if entry.key not in tensors:
            problems.missing.append(f"{entry.key} {torch_shape(entry.leaf.shape)}")
        elif entry.key in skip_classifier:
            report.new[CLASSIFIER] = skip_classifier[entry.key]
            report.unused[entry.key] = f"not loaded: {skip_classifier[entry.key]}"
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
    return [strip_prefixes(key) for key in state_dict]


def _normalised_tensors(state_dict: Mapping[str, Any], source: str) -> tuple[dict[str, Any], LoadReport]:
    """Keys without prefixes; BatchNorm step counters and an mm* model's necks and heads set aside in a fresh report."""
    report = LoadReport(source=source)
    tensors: dict[str, Any] = {}
    unwrapped = {original: original.removeprefix("module.") for original in state_dict}
    has_backbone = any(key.startswith(BACKBONE_PREFIX) for key in unwrapped.values())
    for original, value in state_dict.items():
        if has_backbone and not unwrapped[original].startswith((BACKBONE_PREFIX, "head.fc.")):
            report.unused[original] = "outside the backbone (the neck or heads of a detector or segmenter)"
            continue
        key = strip_prefixes(original)
        if key in tensors:
            raise WeightConversionError(
                f"{source}: keys collide once prefixes are stripped: {key!r} (from {original!r})"
            )
        if key.endswith(".num_batches_tracked"):
            report.unused[key] = "BatchNorm step counter, not a weight"
        else:
            tensors[key] = value
    return tensors, report


def _classifier_mismatch(tensors: Mapping[str, Any], entries: list[Entry]) -> dict[str, str]:
    """{fc key: reason} when the file's classifier has another class count than the model's."""
    model_fc = {e.key: e.leaf.shape for e in entries if is_classifier(e.key)}
    if "fc.weight" not in model_fc or "fc.weight" not in tensors:
        return {}
    file_classes, file_features = np.shape(tensors["fc.weight"])
    model_features, model_classes = model_fc["fc.weight"]
    if file_features != model_features or file_classes == model_classes:
        return {}
    why = f"classifier has {file_classes} classes in the file, {model_classes} in the model"
    return {key: why for key in model_fc}


def _initial_value(entry: Entry) -> np.ndarray:
    if not hasattr(entry.leaf, "__array__"):
        raise WeightConversionError(
            f"{entry.key} must stay newly initialised but the template holds only its shape "
            "(jax.eval_shape); pass variables from model.init instead"
        )
    return np.asarray(entry.leaf)


def _fit(entry: Entry, value: np.ndarray, reduction: str, report: LoadReport, problems: _Problems):
    """The file's tensor in Flax layout and the template's dtype, or None after recording a mismatch."""
    expected = torch_shape(entry.leaf.shape)
    if value.shape != expected and entry.key in STEM_CONVS and _adaptable(value.shape, expected):
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


def _sort_leftovers(tensors: dict[str, Any], entries: list[Entry], report: LoadReport, problems: _Problems) -> None:
    """File keys no model weight took: tolerated (reported unused) or unexpected."""
    shortcut_convs = {e.key.rsplit(".", 1)[0] for e in entries if e.key.endswith("downsample.0.weight")}
    has_classifier = any(is_classifier(e.key) for e in entries)
    has_gtm = any(p3d_keys.GTM_MODULES.match(e.key) for e in entries)
    nonzero_biases = []
    for key in list(tensors):
        module = key.rsplit(".", 1)[0]
        if key.endswith(".bias") and module in shortcut_convs:
            if np.any(np.asarray(tensors[key]) != 0):
                nonzero_biases.append(key)
            else:
                report.unused[key] = "all-zero shortcut conv bias (MONAI bias_downsample=True)"
        elif is_classifier(key) and not has_classifier:
            report.unused[key] = "the model has no classifier (backbone)"
        elif p3d_keys.GTM_MODULES.match(key) and not has_gtm:
            report.unused[key] = "the group transform module of a detection backbone; the model has none"
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


def _describe_problems(problems: _Problems, source: str, file_keys: list[str], entries: list[Entry]) -> str:
    lines = [f"{source} does not fit the model; nothing was loaded.", *_hints(file_keys, [e.key for e in entries])]
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


def _hints(file_keys: list[str], model_keys: list[str]) -> list[str]:
    """Which model options would fit the file, when it holds another architecture or a known shortcut variant."""
    file_arch, model_arch = _architecture(file_keys), _architecture(model_keys)
    if file_arch != model_arch:
        line = f"The file holds a {file_arch}, the model is a {model_arch}."
        if ("P3D" in file_arch) != ("P3D" in model_arch):
            line += ' Set model.arch="mp3d" or "p3d"' if "P3D" in file_arch else ' Set model.arch="resnet3d"'
            line += " and the file's variant / depth."
        return [line]
    if "P3D" in model_arch:
        return []
    hints = []
    file_forced = [key for key in file_keys if key.startswith(_LAYER1_SHORTCUT)]
    model_forced = any(key.startswith(_LAYER1_SHORTCUT) for key in model_keys)
    if file_forced and not model_forced:
        hints.append(
            f"The file has a shortcut conv + norm in layer1.0 ({', '.join(file_forced)}) although that block keeps "
            "its shape, as the reference's released pre-training ResNets have (a bug there, its force_downsample "
            "option). Set model.force_downsample=True (--config.model.force_downsample=True) so the file loads "
            "completely and the network computes what was pre-trained."
        )
    elif model_forced and not file_forced and any(".downsample." in key for key in file_keys):
        hints.append("The model has a layer1.0 shortcut that the file lacks: set model.force_downsample=False.")
    if any(".downsample." in key for key in model_keys) and not any(".downsample." in key for key in file_keys):
        hints.append(
            "The file has no shortcut (downsample.*) weights: a ResNet with the parameter-free type-A shortcut "
            '(MedicalNet). Set model.shortcut_type="A" (--config.model.shortcut_type=A) to load it exactly; '
            "MedicalNet's ResNets also stride depth (model.depth_stride=True)."
        )
    return hints


def _architecture(keys: list[str]) -> str:
    """A readable name for the network a set of plain keys describes, e.g. "ResNet-34 (basic blocks (3, 4, 6, 3))"."""
    if f"{p3d_keys.STEM_CONV}.weight" in keys:
        return p3d_keys.architecture(keys)
    blocks: dict[int, set[int]] = {}
    for key in keys:
        if match := re.match(r"layer(\d+)\.(\d+)\.", key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    sizes = tuple(len(blocks.get(stage, ())) for stage in range(1, max(blocks, default=4) + 1))
    kind = "bottleneck" if any(re.match(r"layer\d+\.\d+\.conv3\.", key) for key in keys) else "basic"
    depth = _RESNET_DEPTHS.get((kind, sizes))
    return f"{f'ResNet-{depth}' if depth else 'ResNet'} ({kind} blocks {sizes})"


def _unflatten(values: list[tuple[Entry, np.ndarray]]) -> dict:
    tree: dict = {}
    for entry, value in values:
        node = tree.setdefault(entry.collection, {})
        for name in entry.path[:-1]:
            node = node.setdefault(name, {})
        node[entry.path[-1]] = value
    return tree

"""Start a model from pre-trained 3D ResNet weights: fine-tune surgery that says what it did.

`initial_variables(init_from, template)` fills a freshly initialised model's
variables (`template`) from

  - a vdt-jax run: its workdir, its `checkpoints/` folder or one step folder
    (`vdt_jax.checkpointing.load_variables`), pre-training or fine-tuning; or
  - a PyTorch `.pth`/`.pt`/`.bin` or `.safetensors` file with torchvision-style
    ResNet keys (CSPR, MONAI, mmcls, MedicalNet prefixes; `vdt_jax.weights.files`)
    or the P3D / MP3D reference's keys (`vdt_jax.weights.p3d_keys`).

Both go through the same importer (a vdt-jax checkpoint is converted to a
state dict first), so the same checks and adaptations apply:

  - the backbone lands where the template keeps it: at the top level for a
    classification ResNet, under "encoder" for the UNet; a source that is
    itself a UNet gives its encoder;
  - a first conv with another number of input channels is adapted (summed or
    averaged over the source's channels, then spread over the model's);
  - the classifier is loaded when its class count matches, and is newly
    initialised (kept from the template) when it differs or the source has none;
  - everything else the template has and the source lacks (the UNet decoder
    and head) stays newly initialised;
  - any other mismatch (another depth, width or block type) is an error that
    lists the offending tensors; nothing is loaded partially.

The returned `LoadReport` (`vdt_jax.weights.load`) lists what was loaded,
adapted and newly initialised; the fine-tuning tasks print it and save it in
the workdir.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from vdt_jax.errors import ConfigError, MissingFileError
from vdt_jax.weights import files, keys, p3d_keys
from vdt_jax.weights.load import CLASSIFIER, LoadReport, from_torch_state_dict

BACKBONE_KEY = "encoder"  # where a UNet keeps its ResNet encoder
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
STEM_MODULES = ("conv1", "bn1", p3d_keys.STEM_CONV, "norm1")  # ResNet, P3D
COLLECTIONS = ("params", "batch_stats")


def initial_variables(
    init_from: str, template: Mapping[str, Any], *, in_channels_reduce: str = "sum", model_config: Any = None
) -> tuple[dict[str, Any], LoadReport]:
    """The template's variables with the backbone (and matching classifier) taken from `init_from`.

    Args:
      init_from: a vdt-jax workdir / checkpoints folder / step folder, or a
        .pth/.pt/.bin/.safetensors file.
      template: {"params": ..., "batch_stats": ...} of the freshly initialised
        target model (numpy or jax arrays): a `ResNet3D` (with or without
        classifier) or a `UNet3D` (backbone under "encoder").
      in_channels_reduce: "sum" or "mean", how a first conv with a different
        number of input channels is adapted.
      model_config: the target's `model` config; when given and the source has a
        model card (a workdir's model_card.json, `<file>.json` beside a weight
        file), a backbone of another depth, width or norm is refused at once,
        naming both, and the differences that are adapted are reported.

    Returns:
      (variables shaped exactly like `template`, as numpy; the report).

    Raises:
      FileNotFoundError: `init_from` does not exist.
      ValueError: it is neither a checkpoint folder nor a weight file, or the
        weights do not fit (keys.WeightConversionError, listing why).
    """
    notes = check_source_card(init_from, model_config) if model_config is not None else {}
    state_dict, source = _read_source(init_from)
    target = (BACKBONE_KEY,) if BACKBONE_KEY in template["params"] else ()
    backbone = _subtree(template, target)
    file_has_classifier = any(re.search(r"(^|\.)fc\.weight$", key) for key in state_dict)
    dropped_classifier = CLASSIFIER in backbone["params"] and not file_has_classifier
    if dropped_classifier:
        backbone = _without(backbone, CLASSIFIER)
    loaded, report = from_torch_state_dict(state_dict, backbone, in_channels_reduction=in_channels_reduce, source=source)
    report.target = "/".join(target)
    report.adapted.update(notes)
    if dropped_classifier:
        report.new[CLASSIFIER] = "the source has no classifier"
    for name in template["params"]:
        if target and name != target[0]:
            report.new[name] = "not in the source (decoder / head)"
    return _graft(template, target, loaded), report


# Backbone fields whose difference changes the weights' shapes or meaning; the rest (strides, input channels,
# classes, conv implementation, dtype) load as they are or are adapted.
STRUCTURAL_FIELDS = ("depth", "widths", "norm")


def check_source_card(init_from: str, model_config: Any) -> dict[str, str]:
    """Compare the source's model card with the target's model config.

    Returns:
      {"(model card)": what differs but is adapted}, or {} (no card, or nothing differs).

    Raises:
      ModelCardError: the card's backbone has another depth, widths or norm.
    """
    from vdt_jax import model_card

    found = _find_card(os.path.abspath(os.path.expanduser(init_from)))
    if found is None:
        return {}
    path, card = found
    source = card.get("architecture") or {}
    target = model_card.plain(model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config))
    differing = [f for f in sorted(set(source) & set(target) - {"in_channels", "num_classes"}) if source[f] != target[f]]
    structural = [f for f in differing if f in STRUCTURAL_FIELDS]
    if structural:
        listed = ", ".join(f"model.{f}: {source[f]} in the card, {target[f]} here" for f in structural)
        raise model_card.ModelCardError(
            f"init_from={init_from}: its model card {path} describes another backbone ({listed}). "
            "Set these model fields to match the card, or start from other weights."
        )
    adapted = [f"{f} {source[f]} -> {target[f]}" for f in differing]
    step = (card.get("source") or {}).get("step")
    note = f"{card.get('task', 'a')} run" + (f", step {step}" if step is not None else "")
    return {"(model card)": f"{path} ({note})" + (f"; differs, weights used as they are: {', '.join(adapted)}" if adapted else "")}


def _find_card(path: str) -> tuple[str, dict[str, Any]] | None:
    """The model card of a weight file, a workdir, its checkpoints/ folder or a step folder."""
    from vdt_jax import model_card

    candidates = [path]
    if os.path.basename(path).isdigit():  # a step folder
        path = os.path.dirname(path)
    if os.path.basename(path) == "checkpoints":
        candidates.append(os.path.dirname(path))
    for candidate in candidates:
        found = model_card.find_card(candidate)
        if found is not None:
            return found
    return None


def trainable_mask(params: Mapping[str, Any], freeze: tuple[str, ...], backbone: tuple[str, ...] = ()) -> Any:
    """A pytree of bools like `params`: False for the parameters of the frozen backbone stages.

    Args:
      params: the model's parameters (arrays or shapes).
      freeze: stage names: "stem" (conv1, bn1; P3D conv1_custom, norm1), "layer1".."layer4", or
        "encoder" for the whole backbone.
      backbone: where the ResNet sits in `params`: () or ("encoder",).
    """
    import jax

    unknown = sorted(set(freeze) - set(STAGES) - {BACKBONE_KEY})
    if unknown:
        expected = STAGES + (BACKBONE_KEY,)
        raise ConfigError(f"--config.finetune.freeze has unknown stage(s) {unknown}; expected names from {expected}")
    stages = set(STAGES) if BACKBONE_KEY in freeze else set(freeze)

    def trainable(path, _) -> bool:
        names = [p.key for p in path]
        if names[: len(backbone)] != list(backbone) or len(names) <= len(backbone) + 1:
            return True
        module = names[len(backbone)]
        stage = "stem" if module in STEM_MODULES else module.split("_")[0]
        return stage not in stages

    return jax.tree_util.tree_map_with_path(trainable, params)


def _read_source(init_from: str) -> tuple[dict[str, np.ndarray], str]:
    """A torchvision-style numpy state dict of the source's ResNet backbone (plus classifier)."""
    path = os.path.abspath(os.path.expanduser(init_from))
    if not os.path.exists(path):
        raise MissingFileError(f"init_from={init_from!r}: no such file or directory")
    if os.path.isdir(path):
        from vdt_jax import checkpointing

        variables, _ = checkpointing.load_variables(path)
        variables = {c: dict(variables.get(c) or {}) for c in COLLECTIONS}
        if BACKBONE_KEY in variables["params"]:  # a fine-tuned UNet: its encoder is the backbone
            variables = _subtree(variables, (BACKBONE_KEY,))
        to_torch = p3d_keys.to_torch_state_dict if p3d_keys.is_p3d(variables) else keys.to_torch_state_dict
        return to_torch(variables), path
    known = files.TORCH_EXTENSIONS + files.SAFETENSORS_EXTENSIONS
    if files.file_extension(path) not in known:
        raise keys.WeightConversionError(
            f"init_from={init_from!r} is neither a vdt-jax workdir/checkpoint folder nor a weight file "
            f"({', '.join(known)})"
        )
    return files.read_state_dict(path), path


def _subtree(variables: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for collection in COLLECTIONS:
        node = variables.get(collection) or {}
        for name in path:
            node = node.get(name, {})
        out[collection] = node
    return out


def _without(variables: Mapping[str, Any], module: str) -> dict[str, Any]:
    return {c: {k: v for k, v in (variables.get(c) or {}).items() if k != module} for c in COLLECTIONS}


def _graft(template: Mapping[str, Any], path: tuple[str, ...], loaded: Mapping[str, Any]) -> dict[str, Any]:
    """A numpy copy of `template` with `loaded`'s modules put at `path` (modules it lacks keep the template's)."""
    out = {c: _to_numpy(template.get(c) or {}) for c in COLLECTIONS}
    for collection in COLLECTIONS:
        if not loaded.get(collection):  # e.g. no batch_stats with GroupNorm
            continue
        node = out[collection]
        for name in path:
            node = node[name]
        for name, value in loaded[collection].items():
            node[name] = _to_numpy(value)
    return out


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)

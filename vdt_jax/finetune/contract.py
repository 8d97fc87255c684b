"""What a fine-tuning run's model card says: the network, its classes, the input contract, the PyTorch code.

The fine-tuning tasks write these fields into `model_card.json` (through the
training loop, `vdt_jax.model_card`); `python -m vdt_jax.predict` rebuilds them
from a checkpoint's saved config and refuses a card that disagrees, and the
exporter copies them beside every exported file. Everything here is read from
the run's config, so the contract can never be typed differently by hand.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import ml_collections

from vdt_jax import model_card
from vdt_jax.weights import monai_code, unet_keys
from vdt_jax.weights.keys import WeightConversionError

ORIENTATION = (
    "reoriented to the closest canonical orientation (RAS+); model axes (D, H, W) = "
    "(inferior->superior, posterior->anterior, left->right)"
)
NETWORKS = {"segmentation": "UNet3D", "classification": "ResNet3D"}


def preprocessing(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The input contract of a fine-tuning config (see `vdt_jax.finetune.nifti`)."""
    data = config.data
    contract = {
        "orientation": ORIENTATION,
        "layout": "(N, D, H, W, C) in vdt-jax; (N, C, D, H, W) in PyTorch",
        "in_channels": int(data.in_channels),
        "intensity_scaling": "the NIfTI header's scl_slope and scl_inter are applied first",
        "target_spacing_xyz_mm": [float(s) for s in data.target_spacing] or None,
        "resampling": "trilinear (label maps nearest), voxel centres aligned, edges replicated",
        "hu_window_centre_width": [float(v) for v in data.hu_window] or None,
        "normalize": data.normalize,
        "normalize_mean_std": [float(v) for v in data.normalize_mean_std] if data.normalize == "fixed" else None,
        "label_map": [[int(a), int(b)] for a, b in data.label_map],
        "crop_size": [int(s) for s in data.crop_size],
    }
    if config.task == "segmentation":
        contract["sliding_window"] = {
            "window": [int(s) for s in config.eval.window],
            "stride": [int(s) for s in config.eval.stride],
            "weighting": config.eval.weighting,
            "average": config.eval.average,
            "resize": config.eval.resize,
            "largest_component": bool(config.eval.largest_component),
            "output": _segmentation_output(config.eval),
        }
    else:
        contract["crop_centre"] = "a manifest's x, y, z in world (RAS) millimetres, or the volume centre"
    return contract


def _segmentation_output(evaluation: ml_collections.ConfigDict) -> str:
    """How the labels are made, in words (eval.average, eval.resize, eval.largest_component)."""
    scores = "logits" if evaluation.average == "logits" else "softmax"
    if evaluation.resize == "scores":
        text = f"the weighted mean {scores} resized (trilinear) to each file's own grid, then argmax"
    else:
        text = f"argmax of the weighted mean {scores}, resampled (nearest) to each file's own grid"
    return text + ("; then each class's largest connected component only" if evaluation.largest_component else "")


def pytorch(config: ml_collections.ConfigDict, workdir: str, num_classes: int) -> dict[str, str]:
    """How to export a run's weights, and the code that rebuilds the model in PyTorch and loads them."""
    in_channels = int(config.data.in_channels)
    command = f"python -m vdt_jax.export --workdir={workdir} --out=model.pth"
    if config.task != "segmentation":
        code = monai_code.monai_code_for(config.model, num_classes=num_classes, in_channels=in_channels)
        return {"export_command": command, "code": code}
    try:
        code = unet_keys.torch_unet_code(config.model, config.unet, in_channels=in_channels, num_classes=num_classes, path="model.pth")
    except WeightConversionError as error:
        code = f"(none: {error})\n"
    backbone = monai_code.monai_code_for(config.model, num_classes=None, in_channels=in_channels, path="encoder.pth")
    return {
        "export_command": command,
        "code": code,
        "backbone_export_command": f"python -m vdt_jax.export --workdir={workdir} --backbone_only --out=encoder.pth",
        "backbone_code": backbone,
    }


def card_fields(config: ml_collections.ConfigDict, class_names: Sequence[str], workdir: str) -> dict[str, Any]:
    """The task-given fields of a fine-tuning run's model card."""
    architecture = model_card.architecture(
        config.model, network=NETWORKS[config.task], in_channels=int(config.data.in_channels), num_classes=len(class_names)
    )
    if config.task == "segmentation":
        architecture["decoder"] = model_card.plain(config.unet.to_dict())  # the `unet` config block
    return {
        "task": config.task,
        "architecture": architecture,
        "class_names": list(class_names),
        "preprocessing": preprocessing(config),
        "pytorch": pytorch(config, workdir, len(class_names)),
    }


def class_names(config: ml_collections.ConfigDict, num_classes: int, card: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The run's class names: its card's, its config's, its dataset.json's, else class_0, class_1, ..."""
    candidates = [(card or {}).get("class_names") or (), tuple(config.data.class_names)]
    if config.task == "segmentation" and not config.data.synthetic and os.path.isfile(config.data.path):
        from vdt_jax.finetune import manifests

        try:
            candidates.append(manifests.read_decathlon(config.data.path, train_key=config.data.train_key,
                                                       eval_key=config.data.eval_key, num_val_cases=config.data.num_val_cases)[2])
        except manifests.ManifestError:
            pass
    if config.data.synthetic:
        from vdt_jax.finetune import synthetic

        candidates.append(synthetic.SEGMENTATION_LABELS if config.task == "segmentation" else synthetic.CLASSIFICATION_LABELS)
    for names in candidates:
        if len(names) == num_classes:
            return tuple(str(n) for n in names)
    return tuple(f"class_{i}" for i in range(num_classes))

"""The full export of a segmentation UNet: its PyTorch key names, and the code that rebuilds it in PyTorch.

`python -m vdt_jax.export` on a UNet fine-tuning run writes either the encoder
alone (`--backbone_only`: torchvision/MONAI ResNet keys, `vdt_jax.weights.keys`)
or the whole UNet with these keys, which `vdt_jax.weights.torch_unet.TorchUNet3D`
(plain PyTorch, no MONAI) loads with strict=True:

  Flax variables                                PyTorch state dict
  params/encoder/<ResNet name>/...              encoder.<ResNet key>  (conv1, bn1, layer1.0.conv1, ...,
                                                layer2.0.downsample.0/1; no fc)
  params/up{i}/up_conv/kernel                   up{i}.up_conv.weight    1x1x1 conv after the trilinear upsampling
  params/up{i}/up_norm/..., batch_stats/...     up{i}.up_norm.*         its norm (unet.up_conv_norm only)
  params/up{i}/conv{j}/kernel                   up{i}.conv{j}.weight    3x3x3 convs, j = 1, 2
  params/up{i}/norm{j}/{scale,bias}             up{i}.norm{j}.{weight,bias}
  batch_stats/up{i}/norm{j}/{mean,var}          up{i}.norm{j}.{running_mean,running_var} (+ num_batches_tracked)
  params/head_conv/kernel, head_norm/...        head_conv.weight, head_norm.*  (then head_conv2, head_norm2, ...
                                                with unet.head_convs > 1)
  params/head/{kernel,bias}                     head.weight, head.bias  (1x1x1 conv to the classes)

i = 1..4 runs from the deepest up-block (layer4 -> layer3) to the last (-> stem).
Layouts are PyTorch's: conv weights (O, I, kD, kH, kW); inputs (N, C, D, H, W).
Everything here is numpy (no PyTorch needed to write the file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vdt_jax.weights.keys import WeightConversionError, to_torch_state_dict

ENCODER = "encoder"
_TOP_ORDER = {ENCODER: 0, "up1": 1, "up2": 2, "up3": 3, "up4": 4, "head": 1000}  # head_conv{n}/head_norm{n}: 5 + 2n
_BLOCK_ORDER = {"up_conv": 0, "up_norm": 1, "conv1": 2, "norm1": 3, "conv2": 4, "norm2": 5}
UNET_FIELDS = ("up_conv_norm", "head_channels", "head_convs")  # `unet` config fields TorchUNet3D takes; head_dropout is training-only
# `model` config fields TorchUNet3D reproduces; compute-only ones (conv_impl, dtype) and training-only
# BatchNorm options do not change the exported network.
SUPPORTED_MODEL_FIELDS = frozenset(
    {"depth", "widths", "stem_stride", "depth_stride", "stage_strides", "norm", "conv_impl", "dtype", "bn_group_size", "bn_momentum",
     "head_init_std"}
)
# Fields TorchUNet3D honours only at these values (the 3D ResNet encoder with type-B shortcuts);
# p3d_variant means something only for a pseudo-3D arch.
DEFAULT_ONLY_MODEL_FIELDS = {"arch": "resnet3d", "shortcut_type": "B", "force_downsample": False, "p3d_variant": None}


def is_unet(params: Mapping[str, Any]) -> bool:
    """True for the variables of a `UNet3D` (a ResNet encoder under "encoder" and a segmentation head)."""
    return ENCODER in params and "head" in params


def encoder_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The ResNet encoder's {"params", "batch_stats"} of a UNet's variables."""
    return {c: dict((variables.get(c) or {}).get(ENCODER, {})) for c in ("params", "batch_stats")}


def unet_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The whole UNet as a float32 PyTorch state dict with the keys above, in module order."""
    state = to_torch_state_dict(variables, keys="plain")
    unknown = sorted(top for top in {key.split(".", 1)[0] for key in state} if _top_order(top) is None)
    if unknown:
        raise WeightConversionError(f"the UNet holds modules {unknown} that TorchUNet3D does not know")

    def order(key: str) -> tuple[int, int]:
        top, _, rest = key.partition(".")
        return _top_order(top), _BLOCK_ORDER.get(rest.split(".", 1)[0], 0) if re.fullmatch(r"up\d", top) else 0

    return dict(sorted(state.items(), key=lambda item: order(item[0])))  # stable: ResNet order kept inside


def _top_order(top: str) -> int | None:
    """Where a top-level module goes in the state dict (TorchUNet3D's order), None for one it does not have."""
    head = re.fullmatch(r"head_(conv|norm)(\d*)", top)
    if head:
        return 5 + 2 * (int(head.group(2) or 1) - 1) + (head.group(1) == "norm")
    return _TOP_ORDER.get(top)


def check_supported(model_config: Any) -> None:
    """Refuse a `model` config with fields TorchUNet3D does not implement (so no export can silently differ)."""
    values = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    unsupported = sorted(
        name
        for name, value in values.items()
        if name not in SUPPORTED_MODEL_FIELDS
        and not (name in DEFAULT_ONLY_MODEL_FIELDS and DEFAULT_ONLY_MODEL_FIELDS[name] in (None, value))
    )
    if unsupported:
        raise WeightConversionError(
            f"the PyTorch reference UNet (vdt_jax/weights/torch_unet.py) does not implement model."
            f"{', model.'.join(unsupported)}: a full UNet export could not be reproduced in PyTorch. "
            "Export the encoder with --backbone_only, or extend TorchUNet3D."
        )


def torch_unet_code(model_config: Any, unet_config: Any, *, in_channels: int, num_classes: int, path: str) -> str:
    """Python code that builds the matching `TorchUNet3D` as `model` (`model` and `unet` config) and loads `path` strictly."""
    check_supported(model_config)
    args = [
        f"depth={int(model_config.depth)}",
        f"widths={tuple(int(w) for w in model_config.widths)}",
        f"in_channels={int(in_channels)}",
        f"num_classes={int(num_classes)}",
        f"stem_stride={bool(model_config.stem_stride)}",
        f"depth_stride={bool(model_config.depth_stride)}",
        f"stage_strides={tuple(int(s) for s in model_config.stage_strides)}",
        f"norm={model_config.norm!r}",
        *(f"{name}={unet_config[name]!r}" for name in UNET_FIELDS),
    ]
    if path.lower().endswith(".safetensors"):
        load = ["from safetensors.torch import load_file", f"state = load_file({path!r})"]
    else:
        load = [f"state = torch.load({path!r}, map_location='cpu', weights_only=True)"]
    lines = [
        "import torch",
        "from vdt_jax.weights.torch_unet import TorchUNet3D  # pip install 'vdt-jax[torch]'",
        "",
        f"model = TorchUNet3D({', '.join(args)})",
        *load,
        "model.load_state_dict(state, strict=True)",
        "model.eval()",
        "# input (N, C, D, H, W) float32, preprocessed as the model card says; output (N, num_classes, D, H, W) logits",
    ]
    return "\n".join(lines) + "\n"

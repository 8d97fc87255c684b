"""The MONAI code that rebuilds a vdt-jax ResNet in PyTorch and loads its exported weights strictly."""

from __future__ import annotations

from vdt_jax.weights.files import SAFETENSORS_EXTENSIONS, file_extension


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
    if file_extension(path) in SAFETENSORS_EXTENSIONS:
        lines = ["from safetensors.torch import load_file", f"state = load_file({path!r})"]
    else:
        lines = [f"state = torch.load({path!r}, map_location='cpu', weights_only=True)"]
    if keys == "medicalnet":
        lines.append("state = {k.removeprefix('module.'): v for k, v in state.items()}")
    elif keys == "mmcls":
        lines.append("state = {k.removeprefix('backbone.').replace('head.fc.', 'fc.'): v for k, v in state.items()}")
    return lines + ["model.load_state_dict(state, strict=True)", "model.eval()"]


def monai_code_for(
    model_config,
    *,
    num_classes: int | None,
    in_channels: int,
    stem_kernel: int | tuple[int, int, int] = 7,
    downsample_bias: bool = False,
    keys: str = "plain",
    path: str = "model.pth",
) -> str:
    """`monai_code` for the ResNet a `model` config describes, or "(none: why)" when MONAI has no such network."""
    if "arch" in model_config and model_config.arch != "resnet3d":
        return f"(none: MONAI has no pseudo-3D network such as {model_config.arch}; see vdt_jax.weights.p3d_keys)\n"
    try:
        return monai_code(
            int(model_config.depth),
            num_classes=num_classes,
            in_channels=int(in_channels),
            stem_kernel=stem_kernel,
            stem_stride=bool(model_config.stem_stride),
            depth_stride=bool(model_config.depth_stride),
            stage_strides=tuple(model_config.stage_strides),
            widths=tuple(model_config.widths),
            norm=model_config.norm,
            downsample_bias=downsample_bias,
            keys=keys,
            path=path,
        )
    except ValueError as error:
        return f"(none: {error})\n"

"""A plain-PyTorch reference of vdt-jax's segmentation UNet, to use a full UNet export without JAX.

    pip install 'vdt-jax[torch]'

    from vdt_jax.weights.torch_unet import TorchUNet3D
    model = TorchUNet3D(depth=18, widths=(64, 128, 256, 512), in_channels=1, num_classes=14,
                        stem_stride=False, depth_stride=True)
    model.load_state_dict(torch.load("bcv_unet.pth", weights_only=True), strict=True)

The model card beside an export (`<file>.json`, key "pytorch") holds the exact
line for that file. The module mirrors `vdt_jax.models.unet3d.UNet3D` layer for
layer, with the key names of `vdt_jax.weights.unet_keys`: a 3D ResNet encoder
(`encoder.*`, torchvision/MONAI names), four up-blocks (trilinear upsampling to
the skip's size, 1x1x1 conv, concatenation [skip, upsampled], two 3x3x3
conv-norm-ReLU) and an FCN head. Inputs are (N, C, D, H, W) volumes preprocessed
as the model card says; outputs are per-voxel logits (N, num_classes, D, H, W).
It imports PyTorch when imported; nothing else in vdt-jax imports this module.
"""

from __future__ import annotations

import math
from typing import Sequence

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("vdt_jax.weights.torch_unet needs PyTorch: pip install 'vdt-jax[torch]'") from error

STAGE_SIZES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels, eps=1e-5)
    if kind == "group":
        return nn.GroupNorm(groups, channels, eps=1e-5)
    raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'group'")


def _conv(in_channels: int, out_channels: int, kernel: int, stride=1, bias: bool = False) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, features: int, stride, norm: str):
        super().__init__()
        self.conv1 = _conv(in_channels, features, 3, stride)
        self.bn1 = _norm(norm, features, 32)
        self.conv2 = _conv(features, features, 3)
        self.bn2 = _norm(norm, features, 32)
        self.downsample = _shortcut(in_channels, features, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, features: int, stride, norm: str):
        super().__init__()
        self.conv1 = _conv(in_channels, features, 1)
        self.bn1 = _norm(norm, features, 32)
        self.conv2 = _conv(features, features, 3, stride)
        self.bn2 = _norm(norm, features, 32)
        self.conv3 = _conv(features, features * 4, 1)
        self.bn3 = _norm(norm, features * 4, 32)
        self.downsample = _shortcut(in_channels, features * 4, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _shortcut(in_channels: int, out_channels: int, stride, norm: str) -> nn.Module | None:
    """Type-B shortcut (1x1x1 conv + norm) when the shape changes, as in `vdt_jax.models.resnet3d`."""
    if in_channels == out_channels and all(s == 1 for s in stride):
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), _norm(norm, out_channels, 32))


class ResNetEncoder(nn.Module):
    """The 3D ResNet without classifier; returns {"stem", "layer1", ..., "layer4"} feature maps."""

    def __init__(self, depth: int, widths: Sequence[int], in_channels: int, stem_stride: bool, depth_stride: bool,
                 stage_strides: Sequence[int], norm: str):
        super().__init__()
        if depth not in STAGE_SIZES:
            raise ValueError(f"no 3D ResNet of depth {depth}; choose one of {sorted(STAGE_SIZES)}")
        block = Bottleneck if depth >= 50 else BasicBlock

        def stride(s: int) -> tuple[int, int, int]:
            return (s if depth_stride else 1, s, s)

        self.conv1 = nn.Conv3d(in_channels, widths[0], 7, stride=stride(2 if stem_stride else 1), padding=3, bias=False)
        self.bn1 = _norm(norm, widths[0], 32)
        self.maxpool = nn.MaxPool3d(3, stride=stride(2), padding=1)
        channels = widths[0]
        for stage, (blocks, width) in enumerate(zip(STAGE_SIZES[depth], widths), start=1):
            layers = []
            for i in range(blocks):
                layers.append(block(channels, width, stride(stage_strides[stage - 1]) if i == 0 else (1, 1, 1), norm))
                channels = width * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {"stem": F.relu(self.bn1(self.conv1(x)))}
        x = self.maxpool(features["stem"])
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
            features[f"layer{stage}"] = x
        return features


class UpBlock(nn.Module):
    """Upsample to the skip's size, 1x1x1 conv (+ norm-ReLU with up_conv_norm), concatenate [skip, x], two 3x3x3 conv-norm-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, features: int, norm: str, up_conv_norm: bool = False):
        super().__init__()
        groups = math.gcd(32, features)  # as the Flax decoder: fewer groups on narrow layers
        self.up_conv = _conv(in_channels, features, 1)
        self.up_norm = _norm(norm, features, groups) if up_conv_norm else None
        self.conv1 = _conv(skip_channels + features, features, 3)
        self.norm1 = _norm(norm, features, groups)
        self.conv2 = _conv(features, features, 3)
        self.norm2 = _norm(norm, features, groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up_conv(F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False))
        if self.up_norm is not None:
            x = F.relu(self.up_norm(x))
        x = torch.cat([skip, x], dim=1)
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class TorchUNet3D(nn.Module):
    """vdt-jax's `UNet3D` in PyTorch: logits (N, num_classes, D, H, W) for inputs (N, in_channels, D, H, W).

    up_conv_norm, head_channels (0: the stem's width) and head_convs are the
    `unet` config fields; the head's channel dropout does nothing in evaluation.
    """

    def __init__(self, depth: int, widths: Sequence[int], in_channels: int, num_classes: int, *,
                 stem_stride: bool = False, depth_stride: bool = True, stage_strides: Sequence[int] = (1, 2, 2, 2),
                 norm: str = "batch", up_conv_norm: bool = False, head_channels: int = 0, head_convs: int = 1):
        super().__init__()
        self.encoder = ResNetEncoder(depth, widths, in_channels, stem_stride, depth_stride, stage_strides, norm)
        expansion = 4 if depth >= 50 else 1
        skips = [w * expansion for w in widths[2::-1]] + [widths[0]]  # layer3, layer2, layer1, stem
        channels = widths[3] * expansion
        for i, skip in enumerate(skips, start=1):
            setattr(self, f"up{i}", UpBlock(channels, skip, skip, norm, up_conv_norm))
            channels = skip
        width = head_channels or widths[0]
        self.head_layers = [f"head_conv{i + 1 if i else ''}" for i in range(head_convs)]  # head_conv, head_conv2, ...
        for name in self.head_layers:
            setattr(self, name, _conv(channels, width, 3))
            setattr(self, name.replace("conv", "norm"), _norm(norm, width, math.gcd(32, width)))
            channels = width
        self.head = _conv(width, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features["layer4"]
        for i, name in enumerate(("layer3", "layer2", "layer1", "stem"), start=1):
            y = getattr(self, f"up{i}")(y, features[name])
        for name in self.head_layers:
            y = F.relu(getattr(self, name.replace("conv", "norm"))(getattr(self, name)(y)))
        return self.head(y)

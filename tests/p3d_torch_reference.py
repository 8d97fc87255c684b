"""A plain-PyTorch P3D / MP3D backbone with exactly the reference's state-dict keys.

Written for the tests from the facts of the reference `modified_P3D` / `P3D`
backbones (urmagicsmine/MP3D, mmdet/models/backbones/modified_p3d.py and
p3d.py), without mmcv: same module names, shapes, strides and forward pass, so
`state_dict()` has the reference's keys (`conv1_custom.weight`, `norm1.*`,
`layer{s}.{b}.conv1..conv4.weight`, `.norm_1..norm_4.*`, `.downsample.0/1.*`,
`groupconv_{i}.weight` or `conv3d_all_{i}.weight`) and a loaded model computes
what the reference computes.

`forward` returns the four stage outputs after the conversion, NCHW, as the
reference does: MP3D converts each stage output ("groupconv", "center_crop",
"conv3d"); plain P3D max-pools depth after layers 1-3 and returns the centre
slices of the pooled maps.
"""

from __future__ import annotations

import torch
from torch import nn

VARIANTS = {"63": ("bottleneck", (3, 4, 6, 3)), "18ba": ("basic", (2, 2, 2, 2))}
WIDTHS = (64, 128, 256, 512)


def make_norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm3d(channels) if kind == "batch" else nn.GroupNorm(32, channels)


def spatial_conv(cin: int, cout: int, stride=1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)


def depth_conv(cin: int, cout: int, stride=1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (3, 1, 1), stride=stride, padding=(1, 0, 0), bias=False)


def pair(pattern: str, x, conv_s, norm_s, conv_t, norm_t):
    """One spatial + depth pair in pattern A (serial), B (parallel) or C (serial with skip); ReLU after each norm."""
    if pattern == "A":
        return torch.relu(norm_t(conv_t(torch.relu(norm_s(conv_s(x))))))
    if pattern == "B":
        return torch.relu(norm_s(conv_s(x))) + torch.relu(norm_t(conv_t(x)))
    s = torch.relu(norm_s(conv_s(x)))
    return s + torch.relu(norm_t(conv_t(s)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride, pattern: str, downsample, norm: str):
        super().__init__()
        self.pattern, self.downsample = pattern, downsample
        self.conv1 = nn.Conv3d(cin, planes, 1, stride=stride, bias=False)
        self.norm_1 = make_norm(norm, planes)
        self.conv2 = spatial_conv(planes, planes)
        self.norm_2 = make_norm(norm, planes)
        self.conv3 = depth_conv(planes, planes)
        self.norm_3 = make_norm(norm, planes)
        self.conv4 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.norm_4 = make_norm(norm, planes * 4)

    def forward(self, x):
        out = torch.relu(self.norm_1(self.conv1(x)))
        out = pair(self.pattern, out, self.conv2, self.norm_2, self.conv3, self.norm_3)
        out = self.norm_4(self.conv4(out))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + residual)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride, pattern: str, downsample, norm: str):
        super().__init__()
        self.pattern, self.downsample = pattern, downsample
        self.conv1 = spatial_conv(cin, planes, stride)
        self.norm_1 = make_norm(norm, planes)
        # Pattern B's depth conv reads the block input, so it takes the stride too.
        self.conv2 = depth_conv(cin, planes, stride) if pattern == "B" else depth_conv(planes, planes)
        self.norm_2 = make_norm(norm, planes)
        self.conv3 = spatial_conv(planes, planes)
        self.norm_3 = make_norm(norm, planes)
        self.conv4 = depth_conv(planes, planes)
        self.norm_4 = make_norm(norm, planes)

    def forward(self, x):
        out = pair(self.pattern, x, self.conv1, self.norm_1, self.conv2, self.norm_2)
        out = pair(self.pattern, out, self.conv3, self.norm_3, self.conv4, self.norm_4)
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + residual)


class P3DReference(nn.Module):
    """The reference backbone. modified=True: MP3D; False: plain P3D (centre crop only)."""

    def __init__(
        self,
        variant: str = "63",
        *,
        modified: bool = True,
        conversion: str = "groupconv",
        slices: int = 9,
        norm: str = "group",
        widths=WIDTHS,
    ):
        super().__init__()
        kind, stage_sizes = VARIANTS[variant]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.modified, self.conversion = modified, conversion if modified else "center_crop"
        self.conv1_custom = nn.Conv3d(1, widths[0], (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
        self.norm1 = make_norm(norm, self.conv1_custom.out_channels)
        if modified:
            self.maxpool = nn.MaxPool3d(3, stride=(1, 2, 2), padding=1)
        else:
            self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
            self.maxpool_2 = nn.MaxPool3d((3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
            self.maxpool_3 = nn.MaxPool3d((3, 1, 1), stride=1)
        cin, index = self.conv1_custom.out_channels, 0
        for stage, (blocks, planes) in enumerate(zip(stage_sizes, widths), start=1):
            stride = (1, 1, 1) if stage == 1 else (1, 2, 2)
            cout = planes * block.expansion
            layers = []
            for b in range(blocks):
                downsample = None
                if b == 0 and (stage > 1 or cin != cout):
                    shortcut_conv = nn.Conv3d(cin, cout, 1, stride=stride, bias=False)
                    downsample = nn.Sequential(shortcut_conv, make_norm(norm, cout))
                layers.append(block(cin, planes, stride if b == 0 else 1, "ABC"[index % 3], downsample, norm))
                cin, index = cout, index + 1
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        for stage, planes in enumerate(widths, start=1):  # registered after the layers, as in the reference
            cout = planes * block.expansion
            if self.conversion == "groupconv":
                setattr(self, f"groupconv_{stage}", nn.Conv2d(cout * slices, cout, 1, groups=cout, bias=False))
            elif self.conversion == "conv3d":
                setattr(self, f"conv3d_all_{stage}", nn.Conv3d(cout, cout, (slices, 1, 1), bias=False))

    def convert(self, x, stage: int):
        n, c, d, h, w = x.shape
        if self.conversion == "groupconv":
            return getattr(self, f"groupconv_{stage}")(x.reshape(n, c * d, h, w))
        if self.conversion == "conv3d":
            return getattr(self, f"conv3d_all_{stage}")(x).reshape(n, -1, h, w)
        return x[:, :, d // 2]

    def forward(self, x):
        x = self.maxpool(torch.relu(self.norm1(self.conv1_custom(x))))
        outs = []
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
            if not self.modified and stage < 4:
                x = (self.maxpool_2 if stage < 3 else self.maxpool_3)(x)
            outs.append(self.convert(x, stage))
        return outs

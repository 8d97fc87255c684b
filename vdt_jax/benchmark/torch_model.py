"""The same 3D ResNet in PyTorch, for side-by-side timing (imported only when torch is).

Layer for layer what `vdt_jax.models.resnet3d` builds for the benchmark's
networks (BasicBlock or Bottleneck stages, 7x7x7 stem, 3x3x3 max-pool, type-B
shortcuts, BatchNorm), in PyTorch's NCDHW layout. Only the shapes and the work
matter here: the weights are PyTorch's own initialisation, not the Flax ones.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

Triple = tuple[int, int, int]


def _conv(cin: int, cout: int, kernel: int, stride: Triple) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: Triple):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 3, stride), nn.BatchNorm3d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, (1, 1, 1)), nn.BatchNorm3d(width)
        self.shortcut = _shortcut(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: Triple):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 1, (1, 1, 1)), nn.BatchNorm3d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm3d(width)
        self.conv3, self.bn3 = _conv(width, width * 4, 1, (1, 1, 1)), nn.BatchNorm3d(width * 4)
        self.shortcut = _shortcut(cin, width * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: Triple) -> nn.Module:
    if cin == cout and stride == (1, 1, 1):
        return nn.Identity()
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm3d(cout))


class TorchResNet3D(nn.Module):
    """3D ResNet with one input channel; depth never strided (the VDT pre-training layout)."""

    def __init__(self, stage_sizes: Sequence[int], bottleneck: bool, widths: Sequence[int], num_classes: int):
        super().__init__()
        block = _Bottleneck if bottleneck else _Basic
        self.stem = nn.Sequential(
            _conv(1, widths[0], 7, (1, 2, 2)), nn.BatchNorm3d(widths[0]), nn.ReLU(), nn.MaxPool3d(3, (1, 2, 2), 1)
        )
        layers, cin = [], widths[0]
        for stage, (size, width) in enumerate(zip(stage_sizes, widths)):
            for i in range(size):
                stride = (1, 2, 2) if stage > 0 and i == 0 else (1, 1, 1)
                layers.append(block(cin, width, stride))
                cin = width * block.expansion
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3, 4)))

"""Networks: 3D ResNets (the pre-training backbone), the one Conv3D they share, and GroupedBatchNorm."""

from vdt_jax.models.conv import Conv3D
from vdt_jax.models.norms import GroupedBatchNorm
from vdt_jax.models.resnet3d import (
    DEPTHS,
    BasicBlock,
    Bottleneck,
    ResNet3D,
    ResNet3D10,
    ResNet3D18,
    ResNet3D34,
    ResNet3D50,
    ResNet3D101,
    ResNet3D152,
    resnet3d,
)

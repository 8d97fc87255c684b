"""Networks, the one Conv3D they share, and GroupedBatchNorm.

  resnet3d.py         3D ResNets (the VDT pre-training backbone)
  p3d.py              pseudo-3D ResNets P3D / MP3D (the detection backbone)
  group_transform.py  the group transform module: 3D stage features -> 2D FPN inputs
  unet3d.py           the segmentation UNet on a 3D ResNet encoder
  norms.py            GroupedBatchNorm: BatchNorm statistics per group of examples
  factory.py          a network from a config's `model` block
"""

from vdt_jax.models.conv import Conv3D
from vdt_jax.models.group_transform import GroupTransformBackbone
from vdt_jax.models.p3d import P3D, P3D18ba, P3D63, P3DBasicBlock, P3DBottleneck, p3d
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

"""Model FLOPs of a train step, counted from the convolutions the network runs.

The count is the useful work: multiply-adds of kernel taps that read real
input (not padding), times 2 for FLOPs, times 3 for a training step (forward,
input gradient, weight gradient; the usual convention). For the 3D ResNet-18
on a 1x3x224x224 volume the forward pass is 11.2 GMAC (REFERENCE.md), so a
training step is about 67 GFLOP per image. Normalisation, activations and the
optimizer are left out. This number, unlike XLA's cost analysis, does not
depend on the convolution implementation, so MFU compares implementations
fairly.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import linen as nn

from vdt_jax.models.conv import Conv3D, resolve_geometry


def _valid_pairs(size: int, kernel: int, stride: int, pad: int) -> int:
    """(output position, tap) pairs along one axis whose input index is inside the volume."""
    out = (size + 2 * pad - kernel) // stride + 1
    return sum(1 for o in range(out) for t in range(kernel) if 0 <= o * stride + t - pad < size)


def conv_macs(input_shape: tuple[int, ...], kernel: tuple[int, int, int], strides, padding, features: int) -> int:
    """Multiply-adds of one NDHWC convolution, counting only taps inside the input."""
    batch, *spatial, channels = input_shape
    pairs = 1
    for size, k, s, p in zip(spatial, kernel, strides, padding):
        pairs *= _valid_pairs(size, k, s, p)
    return batch * pairs * channels * features


def forward_macs(model: nn.Module, variables: Any, inputs: jax.Array) -> int:
    """Multiply-adds of one forward pass (Conv3D and Dense layers), traced abstractly."""
    total = 0

    def count(next_fun, args, kwargs, context):
        nonlocal total
        module = context.module
        if context.method_name == "__call__" and isinstance(module, Conv3D):
            kernel, strides, padding = resolve_geometry(module.kernel_size, module.strides, module.padding)
            total += conv_macs(args[0].shape, kernel, strides, padding, module.features)
        elif context.method_name == "__call__" and isinstance(module, nn.Dense):
            total += args[0].size * module.features
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
    return total


def train_step_flops(model: nn.Module, variables: Any, inputs: jax.Array) -> float:
    """FLOPs of one training step on `inputs` (the whole batch): 3 x 2 x forward multiply-adds."""
    return 6.0 * forward_macs(model, variables, inputs)

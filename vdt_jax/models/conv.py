"""The one 3D convolution every vdt-jax network uses.

All networks build their 3D convolutions through `Conv3D`, so the way the
convolution is computed is chosen in one place. The parameter is always a
kernel of shape (kD, kH, kW, in, out) (PyTorch's (out, in, kD, kH, kW)
transposed), whatever the implementation, so checkpoints and exported weights do
not depend on it.

Implementations:
  "conv3d":     one `lax.conv_general_dilated` over three spatial axes. The
                natural choice on TPU and GPU.
  "depth_taps": the convolution as a sum over the kD depth taps of 2D
                convolutions, with depth folded into the batch axis. XLA:CPU
                runs 2D convolutions much faster than 3D ones, and the volumes of
                VDT pre-training have depth 3, so this is the CPU choice (see
                `python -m vdt_jax.benchmarks.conv_speed`). Taps that only ever read
                zero padding are skipped.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vdt_jax.errors import ConfigError

Triple = tuple[int, int, int]
IMPLEMENTATIONS = ("conv3d", "depth_taps")

# PyTorch's ResNet initialisation: kaiming normal, fan_out, ReLU gain.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _triple(value: int | Sequence[int]) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"expected an int or 3 values, got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def conv3d(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple) -> jax.Array:
    """Plain 3D convolution, NDHWC input, DHWIO kernel."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=[(p, p) for p in padding],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


def depth_taps_conv3d(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple) -> jax.Array:
    """The same convolution as `conv3d`, as a sum of 2D convolutions over depth taps.

    Output depth o reads padded input depth o * stride + t for tap t. For each
    tap we gather those slices, fold depth into the batch and run one 2D conv.
    """
    n, depth, height, width, channels = x.shape
    taps = kernel.shape[0]
    stride_d, pad_d = strides[0], padding[0]
    out_depth = (depth + 2 * pad_d - taps) // stride_d + 1
    out = None
    for t in range(taps):
        # Input depths read by this tap (before padding): o * stride + t - pad.
        first = t - pad_d
        indices = [first + o * stride_d for o in range(out_depth)]
        if all(i < 0 or i >= depth for i in indices):
            continue  # the tap only sees zero padding
        slices = _depth_slices(x, indices)
        y = jax.lax.conv_general_dilated(
            slices.reshape(n * out_depth, height, width, channels),
            kernel[t],
            window_strides=strides[1:],
            padding=[(p, p) for p in padding[1:]],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        out = y if out is None else out + y
    assert out is not None, "a convolution needs at least one tap inside the input"
    return out.reshape(n, out_depth, *out.shape[1:])


def _depth_slices(x: jax.Array, indices: list[int]) -> jax.Array:
    """x[:, indices] where out-of-range indices read zeros."""
    depth = x.shape[1]
    inside = [i for i in indices if 0 <= i < depth]
    lo, hi = inside[0], inside[-1]
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    body = x[:, lo : hi + 1 : step]
    before = sum(1 for i in indices if i < 0)
    after = sum(1 for i in indices if i >= depth)
    if before or after:
        body = jnp.pad(body, [(0, 0), (before, after), (0, 0), (0, 0), (0, 0)])
    return body


class Conv3D(nn.Module):
    """Bias-free-by-default 3D convolution on NDHWC inputs with PyTorch-style padding."""

    features: int
    kernel_size: int | Sequence[int] = 3
    strides: int | Sequence[int] = 1
    padding: int | Sequence[int] | None = None  # None: kernel_size // 2 ("same" for odd kernels)
    use_bias: bool = False
    impl: str = "conv3d"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = kaiming_fan_out

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in IMPLEMENTATIONS:
            raise ConfigError(f"unknown conv impl {self.impl!r} (--config.model.conv_impl); expected one of {IMPLEMENTATIONS}")
        ksize = _triple(self.kernel_size)
        strides = _triple(self.strides)
        padding = tuple(k // 2 for k in ksize) if self.padding is None else _triple(self.padding)
        kernel = self.param("kernel", self.kernel_init, (*ksize, x.shape[-1], self.features), self.param_dtype)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        fn = conv3d if self.impl == "conv3d" else depth_taps_conv3d
        y = fn(x, kernel, strides, padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y

"""The one 3D convolution every vdt-jax network uses.

All networks build their 3D convolutions through `Conv3D`, so the way the
convolution is computed is chosen in one place. The parameter is always a
kernel of shape (kD, kH, kW, in, out) (PyTorch's (out, in, kD, kH, kW)
transposed), whatever the implementation, so checkpoints and exported weights do
not depend on it.

Implementations (`Conv3D.impl`, the config's `model.conv_impl`):
  "conv3d":     one `lax.conv_general_dilated` over three spatial axes: cuDNN
                on GPU, the MXU on TPU.
  "depth_taps": 2D convolutions over the (output depth, kernel tap) pairs
                that read real input slices, with a hand-written weight
                gradient (see `conv2d`), or as one matrix product over
                patches where the output map is small (`spatial_conv2d`).
                XLA:CPU runs 2D convolutions much faster than 3D ones, and VDT
                volumes have depth 3, where a 3x3x3 convolution has only 7 of
                its 9 (depth, tap) pairs inside the volume. About 4-5x the
                "conv3d" train step on CPU (README, "Speed");
                `tests/test_conv.py` checks its gradients against "conv3d".
  "auto":       "depth_taps" when the default backend is a CPU, else "conv3d"
                (the configs' default).

How "depth_taps" forms the 2D convolutions: output depths that read the same
kernel taps form a group (at depth 3 with a 3x3x3 kernel: {0}, {1}, {2}); for
a group, the input slices its taps read are stacked on the channel axis and
one 2D convolution with the matching (kH, kW, taps * in, out) kernel computes
all of its output depths. When every output depth reads every input depth (the
7x7x7 stem on 3 slices), or the input is narrow (depth x channels <= 96, the
demo network's first stages), depth is folded into the channels instead: one
2D convolution from (H, W, D * in) to (H, W, D_out * out), its kernel zero
where an (input, output) depth pair has no tap.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vdt_jax.errors import ConfigError

Triple = tuple[int, int, int]
IMPLEMENTATIONS = ("conv3d", "depth_taps", "auto")

# PyTorch's ResNet initialisation: kaiming normal, fan_out, ReLU gain.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _triple(value: int | Sequence[int]) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"expected an int or 3 values, got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def resolve_geometry(
    kernel_size: int | Sequence[int], strides: int | Sequence[int], padding: int | Sequence[int] | None
) -> tuple[Triple, Triple, Triple]:
    """(kernel, strides, padding) triples; padding None means kernel // 2 ("same" for odd kernels)."""
    kernel = _triple(kernel_size)
    pad = tuple(k // 2 for k in kernel) if padding is None else _triple(padding)
    return kernel, _triple(strides), pad  # type: ignore[return-value]


def resolve_impl(impl: str) -> str:
    """"auto" -> "depth_taps" on a CPU backend, "conv3d" elsewhere; checks the name."""
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown conv impl {impl!r} (--config.model.conv_impl); expected one of {IMPLEMENTATIONS}")
    if impl == "auto":
        return "depth_taps" if jax.default_backend() == "cpu" else "conv3d"
    return impl


def conv3d(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple) -> jax.Array:
    """Plain 3D convolution, NDHWC input, DHWIO kernel."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=[(p, p) for p in padding],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


# --- 2D convolution with a hand-written weight gradient -----------------------


def _plain_conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, tuple(strides), [(p, p) for p in padding], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[int, int]) -> jax.Array:
    """NHWC x HWIO 2D convolution whose weight gradient is computed with matrix products.

    XLA:CPU lowers the weight gradient of a convolution (a convolution over the
    batch and spatial axes) far slower than the forward pass: at the shapes of a
    3D ResNet-18 on VDT volumes it was 5-10x the forward time and most of the
    train step. Here it is a sum of dot products instead (`_weight_gradient`);
    the input gradient stays XLA's own transposed convolution. Same numbers up
    to float rounding (tests/test_conv.py).
    """
    return _plain_conv2d(x, kernel, strides, padding)


def _conv2d_forward(x, kernel, strides, padding):
    return _plain_conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_backward(strides, padding, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _plain_conv2d(x, kernel, strides, padding), x)
    (dx,) = input_vjp(dy)
    return dx, _weight_gradient(x, dy, kernel.shape, strides, padding).astype(kernel.dtype)


conv2d.defvjp(_conv2d_forward, _conv2d_backward)


def _output_size(hw, kernel_hw, strides, padding) -> tuple[int, int]:
    """(Ho, Wo) of a 2D convolution of an (H, W) map."""
    sizes = zip(hw, kernel_hw, strides, padding)
    return tuple((size + 2 * p - k) // s + 1 for size, k, s, p in sizes)  # type: ignore[return-value]


def _shifted_views(x: jax.Array, kernel_hw, strides, padding, spatial_axes=(1, 2)) -> list[jax.Array]:
    """The kH*kW views x_padded[:, h*s + i, w*s + j, :] (i, j over the kernel), each (N, Ho, Wo, C).

    `spatial_axes` names the (H, W) axes of a 4D x laid out otherwise (then each
    view keeps that layout).
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel_hw, strides, padding
    ah, aw = spatial_axes
    ho, wo = _output_size((x.shape[ah], x.shape[aw]), kernel_hw, strides, padding)
    pads = [(0, 0)] * 4
    pads[ah], pads[aw] = (ph, ph), (pw, pw)
    xp = jnp.pad(x, pads) if ph or pw else x

    def view(i: int, j: int) -> jax.Array:
        start, limit, step = [0] * 4, list(xp.shape), [1] * 4
        start[ah], limit[ah], step[ah] = i, i + sh * (ho - 1) + 1, sh
        start[aw], limit[aw], step[aw] = j, j + sw * (wo - 1) + 1, sw
        return jax.lax.slice(xp, start, limit, step)

    return [view(i, j) for i in range(kh) for j in range(kw)]


def _weight_gradient(x: jax.Array, dy: jax.Array, kernel_shape, strides, padding) -> jax.Array:
    """dL/dkernel[i, j] = sum over (n, h, w) of x_padded[n, h*s + i, w*s + j, :] outer dy[n, h, w, :].

    With few input channels (the stem) the kH*kW shifted views of x, channels
    first, are stacked into one (kH*kW*in, N*Ho*Wo) patch matrix and multiplied
    once (channels-last views copied 3 floats at a time, 1.3-2.2x slower);
    otherwise `_weight_gradient_by_rows`.
    """
    kh, kw, cin, cout = kernel_shape
    if cin >= 16:
        return _weight_gradient_by_rows(x, dy, kernel_shape, strides, padding)
    channels_first = jnp.moveaxis(x, 3, 0)  # (C, N, H, W): the same slicing on axes 2, 3
    shifted = _shifted_views(channels_first, (kh, kw), strides, padding, spatial_axes=(2, 3))
    patches = jnp.stack(shifted).reshape(kh * kw * cin, -1)
    grad = jnp.dot(patches, dy.reshape(-1, cout), preferred_element_type=jnp.float32)
    return grad.reshape(kh, kw, cin, cout)


def _weight_gradient_by_rows(x: jax.Array, dy: jax.Array, kernel_shape, strides, padding) -> jax.Array:
    """The weight gradient from whole padded rows of x, with dy shifted along the width instead.

    Kernel column j reads column w*sw + j of the padded x, that is column
    w + j // sw of its phase j % sw (every sw-th column from j % sw). Per phase
    and kernel row i, the rows x_phase[:, h*sh + i] (all of the phase's columns)
    are multiplied once with that phase's dy copies, each padded to the phase's
    width and shifted right by j // sw, side by side on the channel axis. So
    the shifts cost copies of dy, not the kH*kW strided views of x that one
    product per (i, j) needs; for R3D-18's 28x28 stage (192 stacked input
    channels, 64 out) 3x faster alone, and the whole R3D-18 gradient 5-6% faster.
    """
    kh, kw, cin, cout = kernel_shape
    (sh, sw), (ph, pw) = strides, padding
    ho, wo = dy.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
    rows_limit = sh * (ho - 1) + 1
    contract_positions = (((0,), (0,)), ((), ()))
    grads = [[None] * kw for _ in range(kh)]
    for phase in range(min(sw, kw)):
        x_phase = xp[:, :, phase::sw] if sw > 1 else xp
        taps = range(phase, kw, sw)
        width = x_phase.shape[2]
        shifted_dy = [jnp.pad(dy, ((0, 0), (0, 0), (j // sw, width - wo - j // sw), (0, 0))) for j in taps]
        dy_columns = jnp.concatenate(shifted_dy, axis=-1).reshape(-1, len(taps) * cout)
        for i in range(kh):
            x_rows = jax.lax.slice_in_dim(x_phase, i, i + rows_limit, sh, axis=1).reshape(-1, cin)
            grad = jax.lax.dot_general(x_rows, dy_columns, contract_positions, preferred_element_type=jnp.float32)
            for k, j in enumerate(taps):
                grads[i][j] = grad[:, k * cout : (k + 1) * cout]
    return jnp.stack([jnp.stack(row) for row in grads])


def conv2d_as_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]) -> jax.Array:
    """The same 2D convolution as one matrix product over (kH * kW * in)-long patches.

    XLA:CPU's convolutions are slow on small feature maps: at 2x2 outputs from
    384 channels (the last stage of the demo network) the forward pass ran at
    about 5 GFLOP/s, and strided convolutions' input gradients were slow at any
    size below 8x8. There the patch matrix is small, so copying the input
    kH * kW times costs little, and both gradients are matrix products too.
    """
    return _taps_as_matmul([x], kernel[None], strides, padding)


def _taps_as_matmul(
    xs: Sequence[jax.Array], kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]
) -> jax.Array:
    """sum over t of conv2d(xs[t], kernel[t]), as one matrix product; kernel is (T, kH, kW, in, out).

    The patch columns are ordered (t, kH, kW, in), the kernel's own layout, so
    a tap group's kernel enters the product as a slice and a reshape, not as
    the (kH, kW, T, in, out) transposed copy that stacking the inputs on the
    channel axis needs (28 MB per group and step in R3D-18's last stage). The
    demo network's gradient got 3-5% faster; R3D-18's did not change, as XLA
    still copies the kernel slices of the partial tap groups.
    """
    _, kh, kw, cin, cout = kernel.shape
    shifted = [view for x in xs for view in _shifted_views(x, (kh, kw), strides, padding)]
    patches = shifted[0] if len(shifted) == 1 else jnp.concatenate(shifted, axis=-1)
    n, ho, wo, columns = patches.shape
    y = jnp.dot(patches.reshape(n * ho * wo, columns), kernel.reshape(columns, cout))
    return y.reshape(n, ho, wo, cout)


# Output maps with at most this many positions (8x8) are computed as a matrix
# product (`_taps_as_matmul`), larger ones by XLA's convolution (`conv2d`).
MATMUL_MAX_POSITIONS = 64


def spatial_conv2d(
    xs: Sequence[jax.Array], kernel: jax.Array, strides: Sequence[int], padding: Sequence[int]
) -> jax.Array:
    """sum over t of the 2D convolution of xs[t] with kernel[t] (kernel: (T, kH, kW, in, out)).

    By whichever lowering XLA:CPU runs faster at this size: one matrix product
    for small output maps, else XLA's convolution of the inputs stacked on the
    channel axis.
    """
    ho, wo = _output_size(xs[0].shape[1:3], kernel.shape[1:3], strides, padding)
    if ho * wo <= MATMUL_MAX_POSITIONS:
        return _taps_as_matmul(xs, kernel, strides, padding)
    taps, kh, kw, cin, cout = kernel.shape
    stacked = xs[0] if taps == 1 else jnp.concatenate(xs, axis=-1)
    stacked_kernel = jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, taps * cin, cout)
    return conv2d(stacked, stacked_kernel, tuple(strides), tuple(padding))


# --- the 3D convolution from 2D convolutions ------------------------------------

# Inputs of at most this many channels times depth (depth 3 and 32 channels:
# the demo network's first two stages) fold depth into channels, one 2D
# convolution with zeros for the 2 of 9 (depth, tap) pairs outside the volume,
# which XLA:CPU runs faster than three narrow ones; wider or deeper inputs keep
# one convolution per tap group (folding multiplies work by the depth).
FOLD_MAX_CHANNELS = 96


def _tap_groups(depth: int, taps: int, stride: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Runs of output depths that read the same taps: (first output, count, first tap, tap count)."""
    out_depth = (depth + 2 * pad - taps) // stride + 1
    groups: list[list[int]] = []
    for o in range(out_depth):
        valid = [t for t in range(taps) if 0 <= o * stride + t - pad < depth]
        key = [valid[0], len(valid)] if valid else [0, 0]  # no valid tap: that output is zero
        if groups and groups[-1][2:] == key:
            groups[-1][1] += 1
        else:
            groups.append([o, 1, *key])
    return [tuple(g) for g in groups]  # type: ignore[misc]


def depth_taps_conv3d(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple) -> jax.Array:
    """The same convolution as `conv3d`, from 2D convolutions over valid (depth, tap) pairs."""
    depth, taps = x.shape[1], kernel.shape[0]
    groups = _tap_groups(depth, taps, strides[0], padding[0])
    reads_all = all(count == 1 and n_taps == depth for _, count, _, n_taps in groups)
    if len(groups) > 1 and (reads_all or depth * x.shape[-1] <= FOLD_MAX_CHANNELS):
        return _depth_as_channels(x, kernel, strides, padding)
    outputs = [_group_conv(x, kernel, strides, padding, group) for group in groups]
    return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=1)


def _group_conv(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple, group) -> jax.Array:
    """Output depths first..first+count-1, each reading taps t0..t0+n_taps-1, as one 2D conv."""
    first, count, t0, n_taps = group
    n, _, height, width, cin = x.shape
    stride_d, pad_d = strides[0], padding[0]
    if n_taps == 0:
        out_hw = _output_size((height, width), kernel.shape[1:3], strides[1:], padding[1:])
        return jnp.zeros((n, count, *out_hw, kernel.shape[-1]), x.dtype)
    columns = []
    for t in range(t0, t0 + n_taps):
        start = first * stride_d + t - pad_d
        column = x[:, start : start + (count - 1) * stride_d + 1 : stride_d]
        columns.append(column.reshape(n * count, height, width, cin))
    y = spatial_conv2d(columns, kernel[t0 : t0 + n_taps], strides[1:], padding[1:])
    return y.reshape(n, count, *y.shape[1:])


def _depth_as_channels(x: jax.Array, kernel: jax.Array, strides: Triple, padding: Triple) -> jax.Array:
    """One 2D conv from D*in to D_out*out channels; (input, output) depth pairs no tap joins get zeros."""
    n, depth, height, width, cin = x.shape
    taps, kh, kw, _, cout = kernel.shape
    out_depth = (depth + 2 * padding[0] - taps) // strides[0] + 1
    # big[i, o] = kernel[tap that output depth o applies to input depth i], zero where no tap does
    taps_used = np.array([[i - o * strides[0] + padding[0] for o in range(out_depth)] for i in range(depth)])
    valid = (taps_used >= 0) & (taps_used < taps)
    big = kernel[np.clip(taps_used, 0, taps - 1)]  # (depth, out_depth, kh, kw, cin, cout)
    if not valid.all():
        big = jnp.where(valid[:, :, None, None, None, None], big, 0)
    big = big.transpose(2, 3, 0, 4, 1, 5).reshape(kh, kw, depth * cin, out_depth * cout)
    folded = jnp.moveaxis(x, 1, 3).reshape(n, height, width, depth * cin)
    y = spatial_conv2d([folded], big[None], strides[1:], padding[1:])
    return jnp.moveaxis(y.reshape(*y.shape[:3], out_depth, cout), 3, 1)


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
        impl = resolve_impl(self.impl)
        ksize, strides, padding = resolve_geometry(self.kernel_size, self.strides, self.padding)
        kernel = self.param("kernel", self.kernel_init, (*ksize, x.shape[-1], self.features), self.param_dtype)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        fn = conv3d if impl == "conv3d" else depth_taps_conv3d
        y = fn(x, kernel, strides, padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y

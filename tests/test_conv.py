"""Conv3D implementations: "depth_taps" (and its hand-written weight gradient) equals plain "conv3d".

Every fast path is checked on values and on gradients (input and kernel), at
the shapes it meets in the networks: the VDT stem (depth folded into channels),
3x3x3 body convolutions at depth 3, strided, depth-strided and padded cases,
1x1x1 shortcuts, and a whole 3D ResNet train-mode gradient (an XLA:CPU
miscompile once broke only the whole-network case).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdt_jax.benchmark.jax_step import max_relative_difference
from vdt_jax.errors import ConfigError
from vdt_jax.models import Conv3D, resnet3d
from vdt_jax.models.conv import _tap_groups, conv2d, conv2d_as_matmul, conv3d, depth_taps_conv3d, resolve_impl


def max_relative_error(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


CASES = [
    ((2, 3, 20, 20, 1), (7, 7, 7), (1, 2, 2), (3, 3, 3)),  # the VDT stem: depth folded into channels
    ((2, 3, 9, 9, 6), (3, 3, 3), (1, 1, 1), (1, 1, 1)),  # narrow body conv at depth 3: depth folded, 2 of 9 pairs zero
    ((2, 3, 9, 9, 40), (3, 3, 3), (1, 1, 1), (1, 1, 1)),  # wide body conv at depth 3: one 2D conv per group, 7 pairs
    ((2, 3, 6, 6, 40), (3, 3, 3), (1, 1, 1), (1, 1, 1)),  # wide, small map: each group's taps as one matrix product
    ((1, 5, 9, 9, 24), (3, 3, 3), (2, 2, 2), (1, 1, 1)),  # the same, depth- and height-strided to 3x5x5
    ((2, 3, 9, 9, 6), (3, 3, 3), (1, 2, 2), (1, 1, 1)),  # strided first conv of a stage
    ((2, 5, 9, 9, 4), (3, 3, 3), (2, 2, 2), (1, 1, 1)),  # depth-strided (LIDC recipe)
    ((1, 8, 7, 7, 3), (7, 7, 7), (2, 2, 2), (3, 3, 3)),  # depth-strided stem on a deeper volume
    ((1, 4, 8, 8, 3), (1, 1, 1), (1, 2, 2), (0, 0, 0)),  # shortcut projection
    ((1, 6, 8, 8, 2), (3, 1, 1), (1, 1, 1), (1, 0, 0)),  # a pure depth conv
    ((1, 6, 8, 8, 20), (3, 3, 3), (1, 1, 1), (2, 0, 1)),  # over-padded depth, unpadded height, >= 16 channels
    ((1, 2, 6, 6, 2), (3, 3, 3), (1, 1, 1), (3, 1, 1)),  # outputs that read only padding are zero
]


@pytest.mark.parametrize("shape, kernel, strides, padding", CASES)
def test_depth_taps_values_and_gradients_equal_conv3d(shape, kernel, strides, padding):
    kx, kw, ky = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel, shape[-1], 5))
    expected = conv3d(x, w, strides, padding)
    got = depth_taps_conv3d(x, w, strides, padding)
    assert got.shape == expected.shape
    assert max_relative_error(got, expected) < 1e-5
    cotangent = jax.random.normal(ky, expected.shape)  # a random upstream gradient, not just ones

    def grads(fn):
        return jax.grad(lambda x, w: jnp.vdot(fn(x, w, strides, padding), cotangent), argnums=(0, 1))(x, w)

    for got_grad, expected_grad in zip(grads(depth_taps_conv3d), grads(conv3d)):
        assert max_relative_error(got_grad, expected_grad) < 1e-5


def assert_equals_xla_conv2d(conv, x, w, strides, padding):
    """`conv(x, w)` has the values and the input and kernel gradients of XLA's own 2D convolution."""
    plain = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, strides, [(p, p) for p in padding], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert max_relative_error(conv(x, w), plain(x, w)) < 1e-5
    loss = lambda fn: lambda x, w: jnp.sum(jnp.sin(fn(x, w)))  # noqa: E731
    got = jax.grad(loss(conv), argnums=(0, 1))(x, w)
    expected = jax.grad(loss(plain), argnums=(0, 1))(x, w)
    for g, e in zip(got, expected):
        assert max_relative_error(g, e) < 1e-5


@pytest.mark.parametrize(
    "cin, strides, padding",
    [
        (3, (2, 1), (1, 2)),  # the channels-first patch matrix (< 16 channels)
        (24, (2, 1), (1, 2)),  # whole rows, height-strided
        (24, (1, 2), (0, 2)),  # whole rows of each width phase
        (24, (3, 3), (2, 1)),  # strides below the kernel size in width, above it in height
    ],
)
def test_conv2d_weight_gradient_equals_xla(cin, strides, padding):
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 11, 10, cin))
    w = jax.random.normal(kw, (3, 5, cin, 4))
    assert_equals_xla_conv2d(lambda x, w: conv2d(x, w, strides, padding), x, w, strides, padding)


@pytest.mark.parametrize(
    "shape,kernel,strides,padding",
    [((2, 4, 4, 12), (3, 3), (1, 1), (1, 1)), ((2, 7, 8, 6), (3, 3), (2, 2), (1, 1)), ((3, 5, 5, 4), (1, 1), (2, 2), (0, 0)),
     ((2, 6, 9, 5), (3, 5), (2, 1), (1, 2))],
)
def test_small_maps_as_a_matrix_product_equal_the_convolution(shape, kernel, strides, padding):
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel, shape[-1], 5))
    assert_equals_xla_conv2d(lambda x, w: conv2d_as_matmul(x, w, strides, padding), x, w, strides, padding)


def test_tap_groups_at_vdt_depth():
    # 3x3x3 at depth 3: output 0 reads taps 1-2, output 1 all three, output 2 taps 0-1 (7 pairs, not 9).
    assert _tap_groups(3, 3, 1, 1) == [(0, 1, 1, 2), (1, 1, 0, 3), (2, 1, 0, 2)]
    # Deeper volumes batch the interior outputs into one group.
    assert _tap_groups(6, 3, 1, 1) == [(0, 1, 1, 2), (1, 4, 0, 3), (5, 1, 0, 2)]
    assert _tap_groups(3, 7, 1, 3) == [(0, 1, 3, 3), (1, 1, 2, 3), (2, 1, 1, 3)]  # the stem: 9 of 9 pairs


def test_whole_network_train_gradients_do_not_depend_on_conv_impl():
    """R3D-18 layout (stem, strided stages, shortcuts, max pool) on VDT volumes, train-mode BatchNorm.

    Both float32 implementations are held to the float64 gradient: a few
    BatchNorm biases have a true gradient of zero (the next train-mode
    BatchNorm removes their shift), so comparing the two float32 results
    would compare rounding noise with rounding noise.
    """
    x = jax.random.normal(jax.random.key(2), (2, 3, 32, 32, 1))
    labels = jnp.array([1, 4])
    models = {impl: resnet3d(18, num_classes=7, widths=(8, 16, 16, 32), conv_impl=impl) for impl in ("conv3d", "depth_taps")}
    variables = models["conv3d"].init(jax.random.key(0), x)

    def grads(model, dtype):
        model = model.clone(dtype=dtype, param_dtype=dtype)
        cast = jax.tree.map(lambda a: a.astype(dtype), variables)

        def loss(params):
            logits, _ = model.apply({**cast, "params": params}, x.astype(dtype), train=True, mutable=["batch_stats"])
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

        return jax.jit(jax.value_and_grad(loss))(cast["params"])

    with jax.enable_x64(True):
        loss_64, grads_64 = grads(models["conv3d"], jnp.float64)
    for impl, model in models.items():
        loss_32, grads_32 = grads(model, jnp.float32)
        assert abs(float(loss_32) - float(loss_64)) < 1e-5, impl
        assert max_relative_difference(grads_64, grads_32) < 1e-4, impl


def test_auto_picks_depth_taps_on_cpu_and_rejects_unknown_names():
    assert jax.default_backend() == "cpu"
    assert resolve_impl("auto") == "depth_taps" and resolve_impl("conv3d") == "conv3d"
    with pytest.raises(ConfigError, match="unknown conv impl 'fft'"):
        Conv3D(4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 3, 8, 8, 1)))

"""Tests of vdt_jax.models.conv: every Conv3D implementation computes the same convolution and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdt_jax.errors import ConfigError
from vdt_jax.models import Conv3D, resnet3d
from vdt_jax.models.conv import conv3d, depth_taps_conv3d


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [
        ((2, 3, 16, 16, 1), (7, 7, 7), (1, 2, 2), (3, 3, 3)),  # the VDT stem: 2 of 7 taps read only padding
        ((2, 5, 9, 9, 4), (3, 3, 3), (2, 2, 2), (1, 1, 1)),  # depth-strided block conv
        ((1, 4, 8, 8, 3), (1, 1, 1), (1, 2, 2), (0, 0, 0)),  # shortcut projection
        ((1, 6, 8, 8, 2), (3, 1, 1), (1, 1, 1), (1, 0, 0)),  # a pure depth conv
    ],
)
def test_depth_taps_conv_equals_3d_conv(shape, kernel, strides, padding):
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel, shape[-1], 5))
    expected = conv3d(x, w, strides, padding)
    got = depth_taps_conv3d(x, w, strides, padding)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    g_expected = jax.grad(lambda w: conv3d(x, w, strides, padding).sum())(w)
    g_got = jax.grad(lambda w: depth_taps_conv3d(x, w, strides, padding).sum())(w)
    np.testing.assert_allclose(g_got, g_expected, rtol=1e-5, atol=1e-3)


def test_model_outputs_do_not_depend_on_conv_impl():
    x = jax.random.normal(jax.random.key(2), (2, 3, 32, 32, 1))
    a = resnet3d(10, num_classes=7, conv_impl="conv3d")
    b = resnet3d(10, num_classes=7, conv_impl="depth_taps")
    variables = a.init(jax.random.key(0), x)
    np.testing.assert_allclose(a.apply(variables, x), b.apply(variables, x), rtol=1e-4, atol=1e-5)


def test_unknown_conv_impl_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown conv impl 'fft'"):
        Conv3D(4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 3, 8, 8, 1)))

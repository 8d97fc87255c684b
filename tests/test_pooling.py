"""max_pool3d: the values and gradients of nn.max_pool, ties routed to the same element."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vdt_jax.models.pooling import max_pool3d

POOLS = [
    ((3, 3, 3), (1, 2, 2), ((1, 1), (1, 1), (1, 1))),  # the 3D ResNet / MP3D stem pool on VDT volumes
    ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),  # plain P3D's stem pool
    ((3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0))),  # P3D's depth pooling after a stage
    ((2, 3, 2), (2, 2, 1), ((0, 1), (1, 0), (0, 0))),  # even windows, uneven padding
]


@pytest.mark.parametrize("window,strides,padding", POOLS)
def test_values_and_gradients_equal_flax_max_pool_with_ties(window, strides, padding):
    rng = np.random.default_rng(0)
    # Values from {0, 1, 2}: most windows hold several maxima, as ReLU outputs full of zeros do.
    x = jnp.asarray(rng.integers(0, 3, (2, 5, 9, 8, 3)).astype(np.float32))
    reference = lambda x: nn.max_pool(x, window, strides=strides, padding=padding)  # noqa: E731
    pooled = lambda x: max_pool3d(x, window, strides, padding)  # noqa: E731
    weights = jnp.asarray(rng.normal(size=reference(x).shape).astype(np.float32))
    np.testing.assert_array_equal(pooled(x), reference(x))
    got = jax.grad(lambda x: jnp.sum(pooled(x) * weights))(x)
    expected = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    # Overlapping windows add in another order: equal up to float rounding. A gradient
    # routed to another tie would differ by a whole weight (about 1).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert int(jnp.sum(got != 0)) == int(jnp.sum(expected != 0))


def test_bfloat16_keeps_its_dtype():
    x = jax.random.normal(jax.random.key(0), (1, 3, 6, 6, 2), jnp.bfloat16)
    y, grad = jax.value_and_grad(lambda x: jnp.sum(max_pool3d(x, (3, 3, 3), (1, 2, 2), ((1, 1),) * 3)))(x)
    assert y.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16

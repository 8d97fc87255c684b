"""Tests of vdt_jax.models.unet3d: the decoder and head options the BCV/LiTS recipes set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finetune_default
from tests.test_resnet3d import kernel_initializer
from vdt_jax.models.unet3d import build_unet


def recipe_unet(**unet_options):
    config = finetune_default.get_config("segmentation")
    config.model.widths = (8, 8, 16, 16)
    config.model.conv_impl = "conv3d"
    config.model.head_init_std = 0.01
    config.unet.update(unet_options)
    return build_unet(config.model, config.unet, num_classes=3)


def shapes(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)


def test_the_reference_head_layout_two_narrow_convs_and_an_up_conv_norm():
    x = jnp.zeros((1, 8, 8, 8, 1))
    reference = shapes(recipe_unet(up_conv_norm=True, head_channels=4, head_convs=2, head_dropout=0.1), x)["params"]
    assert reference["head_conv"]["kernel"].shape == (3, 3, 3, 8, 4)  # stem width 8 -> 4 channels
    assert reference["head_conv2"]["kernel"].shape == (3, 3, 3, 4, 4)
    assert reference["head"]["kernel"].shape == (1, 1, 1, 4, 3)
    assert {"up_norm", "up_conv", "conv1", "conv2"} <= set(reference["up1"])
    demo = shapes(recipe_unet(), x)["params"]  # the defaults: one head conv at the stem's width, no up-conv norm
    assert demo["head_conv"]["kernel"].shape == (3, 3, 3, 8, 8) and "head_conv2" not in demo
    assert "up_norm" not in demo["up1"]
    kernel = kernel_initializer(recipe_unet(), x, "head")(jax.random.key(0), (1, 1, 1, 512, 100))
    assert np.std(np.asarray(kernel)) == pytest.approx(0.01, rel=0.02)  # normal(0.01), as mmseg's conv_seg


def test_head_dropout_drops_whole_channels_in_training_only():
    model = recipe_unet(head_convs=2, head_channels=8, head_dropout=0.5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 8, 1)), jnp.float32)
    variables = jax.tree.map(
        lambda s: jnp.asarray(np.random.default_rng(1).normal(0, 0.3, s.shape) + (s.ndim == 1), s.dtype), shapes(model, x)
    )
    apply = jax.jit(
        lambda rng: model.apply(
            variables, x, train=True, mutable=["batch_stats", "intermediates"], rngs={"dropout": rng}, capture_intermediates=True
        )
    )
    _, state = apply(jax.random.key(3))
    inside = state["intermediates"]
    kept_in = np.asarray(jax.nn.relu(inside["head_norm2"]["__call__"][0]))
    dropped_out = np.asarray(inside["Dropout_0"]["__call__"][0])
    zeroed = np.all(dropped_out == 0, axis=(1, 2, 3))  # (examples, channels): whole channels, like Dropout3d
    assert 0 < zeroed.sum() < zeroed.size
    for n, c in zip(*np.nonzero(~zeroed)):
        np.testing.assert_allclose(dropped_out[n, ..., c], 2 * kept_in[n, ..., c], rtol=1e-6)  # scaled by 1 / (1 - p)
    assert not np.array_equal(np.asarray(apply(jax.random.key(4))[0]), np.asarray(apply(jax.random.key(3))[0]))
    evaluate = jax.jit(lambda: model.apply(variables, x, train=False))
    np.testing.assert_array_equal(evaluate(), evaluate())  # no dropout at evaluation

"""3D ResNets: golden parameter counts, shapes and options (the conv implementations: test_conv.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdt_jax.models import Conv3D, resnet3d


def param_count(model, shape=(1, 3, 32, 32, 1)):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "depth, with_fc, expected",
    [
        (18, True, 33_673_000),  # the reference's figure, 1 input channel, 1000 classes
        (18, False, 33_160_000),
        # The rest as counted on MONAI 1.6's 3D ResNets (n_input_channels=1, bias_downsample=False).
        (10, True, 14_868_520),
        (34, True, 63_982_632),
        (50, True, 48_204_072),
        (101, True, 87_250_216),
        (152, True, 119_408_936),
    ],
)
def test_golden_parameter_counts(depth, with_fc, expected):
    model = resnet3d(depth, num_classes=1000 if with_fc else None)
    assert param_count(model) == expected


def test_vdt_volume_keeps_depth_3_to_the_last_stage():
    model = resnet3d(18, num_classes=None)
    features = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 3, 224, 224, 1)))[0])
    assert features["stem"].shape == (2, 3, 112, 112, 64)
    assert features["layer1"].shape == (2, 3, 56, 56, 64)
    assert features["layer4"].shape == (2, 3, 7, 7, 512)


def test_depth_stride_and_unstrided_stem_options():
    strided = resnet3d(18, num_classes=None, depth_stride=True)
    out = jax.eval_shape(lambda: strided.init_with_output(jax.random.key(0), jnp.zeros((1, 48, 48, 48, 1)))[0])
    assert out["layer4"].shape == (1, 2, 2, 2, 512)
    unet_encoder = resnet3d(18, num_classes=None, depth_stride=True, stem_stride=False)
    out = jax.eval_shape(lambda: unet_encoder.init_with_output(jax.random.key(0), jnp.zeros((1, 32, 32, 32, 1)))[0])
    assert out["stem"].shape == (1, 32, 32, 32, 64)
    assert out["layer1"].shape == (1, 16, 16, 16, 64)
    assert out["layer4"].shape == (1, 2, 2, 2, 512)
    bottleneck = resnet3d(50, num_classes=None, stage_strides=(1, 2, 2, 1))
    out = jax.eval_shape(lambda: bottleneck.init_with_output(jax.random.key(0), jnp.zeros((1, 3, 64, 64, 1)))[0])
    assert out["layer4"].shape == (1, 3, 4, 4, 2048)


def test_residual_branch_last_norm_is_zero_initialised():
    model = resnet3d(18, num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))["params"]
    assert not np.any(params["layer1_0"]["bn2"]["scale"])
    assert np.all(params["layer1_0"]["bn1"]["scale"] == 1)
    bottleneck = resnet3d(50, num_classes=10).init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))["params"]
    assert not np.any(bottleneck["layer2_0"]["bn3"]["scale"])
    assert "downsample_conv" in bottleneck["layer1_0"]  # 64 -> 256 channels needs a projection


def test_group_norm_variant_has_no_batch_stats_and_runs():
    model = resnet3d(10, num_classes=4, norm="group")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))
    assert "batch_stats" not in variables
    assert variables["params"]["bn1"]["scale"].shape == (64,)
    logits = model.apply(variables, jnp.ones((2, 3, 32, 32, 1)), train=True)
    assert logits.shape == (2, 4)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = resnet3d(10, num_classes=3, dtype=jnp.bfloat16, widths=(32, 32, 32, 32))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    assert model.apply(variables, jnp.ones((1, 3, 32, 32, 1), jnp.bfloat16)).dtype == jnp.float32


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="depth 19"):
        resnet3d(19)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        resnet3d(10, norm="layer").init(jax.random.key(0), jnp.zeros((1, 3, 16, 16, 1)))
    with pytest.raises(ValueError, match="unknown conv impl 'fft'"):
        Conv3D(4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 3, 8, 8, 1)))

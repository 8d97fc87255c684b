"""Tests of vdt_jax.models.resnet3d: golden parameter counts, shapes and options of the 3D ResNets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import default
from vdt_jax.models import resnet3d
from vdt_jax.models.factory import build_model
from vdt_jax.models.resnet3d import STAGES


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


def _random_variables(model, x, seed=0):
    """Random parameters and running statistics (a real init costs ~20 s on a shared 2-core CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape) + (s.ndim == 1), s.dtype), shapes)


def test_frozen_stages_keep_their_batchnorm_statistics_and_normalise_with_them():
    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, (4, 8, 8, 8, 1)), jnp.float32)
    frozen = resnet3d(10, num_classes=3, widths=(8, 8, 8, 8), frozen_stages=("stem", "layer1"))
    plain = resnet3d(10, num_classes=3, widths=(8, 8, 8, 8))
    variables = _random_variables(plain, x)
    _, updated = jax.jit(lambda v, x: frozen.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    before, after = variables["batch_stats"], updated["batch_stats"]
    for name in ("bn1", "layer1_0"):  # the frozen stages: running statistics untouched
        jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
    for name in ("layer2_0", "layer4_0"):  # the others still follow the batch
        assert not np.allclose(after[name]["bn1"]["mean"], before[name]["bn1"]["mean"])
    # A frozen stage normalises with its running statistics (evaluation mode), as PyTorch's .eval() does:
    # with every stage frozen, the training-mode output equals the evaluation-mode output.
    all_frozen = resnet3d(10, num_classes=3, widths=(8, 8, 8, 8), frozen_stages=STAGES)
    train_out, _ = all_frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(train_out, plain.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"frozen stages \['layer9'\] unknown"):
        resnet3d(10, num_classes=3, frozen_stages=("layer9",)).init(jax.random.key(0), x[:1])


def test_build_model_freezes_the_finetune_stages_and_initialises_the_classifier_as_mmcls():
    config = default.model_config()
    config.update({"depth": 18, "widths": (64, 128, 256, 512), "head_init_std": 0.01})
    assert build_model(config, 2, frozen_stages=("encoder",)).frozen_stages == STAGES
    assert build_model(config, 2, frozen_stages=("stem",)).frozen_stages == ("stem",)
    kernel = kernel_initializer(build_model(config, 1000), jnp.zeros((1, 3, 32, 32, 1)), "fc")(jax.random.key(0), (512, 1000))
    assert np.std(np.asarray(kernel)) == pytest.approx(0.01, rel=0.01)


def kernel_initializer(model, x, name):
    """The kernel initializer of submodule `name`, read while tracing `init` (a real init compiles for minutes here)."""
    found = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.module.name == name and context.method_name == "__call__":
            found["init"] = context.module.kernel_init
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.init, jax.random.key(0), x)
    return found["init"]

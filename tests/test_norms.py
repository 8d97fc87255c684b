"""GroupedBatchNorm: per-group statistics, equal to per-device BatchNorm on a sharded batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import default
from vdt_jax.models import norms
from vdt_jax.models.factory import build_model
from vdt_jax.models.resnet3d import ResNet3D10, norm_factory
from vdt_jax.models.unet3d import UNet3D
from vdt_jax.train import mesh as mesh_lib

DEVICES = 8
PER_DEVICE = 3
FEATURES = 5
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def _inputs(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Each example gets its own offset and scale, so groups have clearly different statistics.
    offsets = rng.normal(0, 3, (batch, 1, 1, 1, FEATURES))
    scales = rng.uniform(0.5, 2.0, (batch, 1, 1, 1, FEATURES))
    return (offsets + scales * rng.normal(size=(batch, 2, 3, 4, FEATURES))).astype(np.float32)


def _variables(module: nn.Module, x: np.ndarray, seed: int = 1) -> dict:
    """Initialised variables with non-trivial scale, bias and running statistics."""
    variables = module.init(jax.random.key(0), x[:1], use_running_average=True)
    rng = np.random.default_rng(seed)
    return {
        "params": {k: jnp.asarray(rng.uniform(0.5, 1.5, (FEATURES,)), jnp.float32) for k in ("scale", "bias")},
        "batch_stats": {
            "mean": jnp.asarray(rng.normal(size=(FEATURES,)), jnp.float32),
            "var": jnp.asarray(rng.uniform(0.5, 2.0, (FEATURES,)), jnp.float32),
        },
    } | {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}


def _per_shard_reference(x: np.ndarray, variables: dict, shard: int) -> tuple[np.ndarray, dict]:
    """Plain flax BatchNorm run separately on each shard: outputs and the mean of the updated running stats."""
    plain = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    outputs, stats = [], []
    for start in range(0, len(x), shard):
        y, updates = plain.apply(variables, x[start : start + shard], mutable=["batch_stats"])
        outputs.append(np.asarray(y))
        stats.append(updates["batch_stats"])
    mean_stats = {k: np.mean([np.asarray(s[k]) for s in stats], axis=0) for k in ("mean", "var")}
    return np.concatenate(outputs), mean_stats


def _sharded_apply(module: nn.Module, variables: dict, x: np.ndarray, train: bool):
    mesh = mesh_lib.make_mesh()
    x = jax.device_put(x, mesh_lib.batch_sharded(mesh))
    variables = jax.device_put(variables, mesh_lib.replicated(mesh))

    @jax.jit
    def apply(variables, x):
        return module.apply(variables, x, use_running_average=not train, mutable=["batch_stats"])

    return apply(variables, x)


def test_group_size_per_device_gives_per_device_statistics_on_a_sharded_batch():
    assert jax.device_count() == DEVICES
    x = _inputs(DEVICES * PER_DEVICE)
    module = norms.GroupedBatchNorm(group_size=PER_DEVICE, momentum=0.9, epsilon=1e-5)
    variables = _variables(module, x)
    y, updates = _sharded_apply(module, variables, x, train=True)
    expected_y, expected_stats = _per_shard_reference(x, variables, PER_DEVICE)
    np.testing.assert_allclose(np.asarray(y), expected_y, rtol=1e-5, atol=1e-5)
    for key in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(updates["batch_stats"][key]), expected_stats[key], rtol=1e-5, atol=1e-6)
    # Whole-batch statistics would give a clearly different output.
    whole, _ = nn.BatchNorm(use_running_average=False, momentum=0.9).apply(variables, x, mutable=["batch_stats"])
    assert np.abs(np.asarray(whole) - expected_y).max() > 0.1


def test_gradients_equal_per_device_batchnorm_gradients():
    x = _inputs(DEVICES * PER_DEVICE, seed=3)
    weights = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    module = norms.GroupedBatchNorm(group_size=PER_DEVICE, momentum=0.9)
    variables = _variables(module, x)
    plain = nn.BatchNorm(use_running_average=False, momentum=0.9)

    def grouped_loss(params, x):
        y, _ = module.apply({**variables, "params": params}, x, use_running_average=False, mutable=["batch_stats"])
        return jnp.sum(y * weights)

    def per_shard_loss(params, x):
        total = 0.0
        for s in range(0, len(x), PER_DEVICE):
            y, _ = plain.apply({**variables, "params": params}, x[s : s + PER_DEVICE], mutable=["batch_stats"])
            total += jnp.sum(y * weights[s : s + PER_DEVICE])
        return total

    got = jax.grad(grouped_loss, argnums=(0, 1))(variables["params"], x)
    want = jax.grad(per_shard_loss, argnums=(0, 1))(variables["params"], x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)


def test_group_size_global_batch_equals_plain_batchnorm():
    x = _inputs(DEVICES * PER_DEVICE, seed=5)
    grouped = norms.GroupedBatchNorm(group_size=len(x), momentum=0.9, epsilon=1e-5)
    variables = _variables(grouped, x)
    y, updates = _sharded_apply(grouped, variables, x, train=True)
    want_y, want = _sharded_apply(nn.BatchNorm(momentum=0.9, epsilon=1e-5), variables, x, train=True)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))  # bit for bit under the same sharding
    for key in ("mean", "var"):
        np.testing.assert_array_equal(np.asarray(updates["batch_stats"][key]), np.asarray(want["batch_stats"][key]))
    unsharded, _ = nn.BatchNorm(use_running_average=False, momentum=0.9).apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y), np.asarray(unsharded), rtol=1e-5, atol=1e-5)


def test_eval_mode_uses_running_statistics_and_any_batch_size():
    x = _inputs(5, seed=6)  # not divisible by the group size: fine without batch statistics
    module = norms.GroupedBatchNorm(group_size=3, momentum=0.9, epsilon=1e-5)
    variables = _variables(module, x)
    y, updates = module.apply(variables, x, use_running_average=True, mutable=["batch_stats"])
    stats, params = variables["batch_stats"], variables["params"]
    want = (x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5) * np.asarray(
        params["scale"]
    ) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(updates["batch_stats"]["mean"]), np.asarray(stats["mean"]))


def test_batch_not_divisible_by_the_group_size_is_a_clear_error():
    x = _inputs(10)
    module = norms.GroupedBatchNorm(group_size=4)
    variables = _variables(module, x)
    with pytest.raises(ValueError, match=r"group size 4 does not divide the batch of 10 examples.*model\.bn_group_size"):
        module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])


def test_variables_match_flax_batchnorm_names_shapes_and_dtypes():
    x = _inputs(4)
    grouped = norms.GroupedBatchNorm(group_size=2).init(jax.random.key(0), x, use_running_average=False)
    plain = nn.BatchNorm().init(jax.random.key(0), x, use_running_average=False)
    shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
    assert shapes(grouped) == shapes(plain)


def test_bfloat16_output_with_float32_statistics():
    x = _inputs(8)
    module = norms.GroupedBatchNorm(group_size=4, dtype=jnp.bfloat16, momentum=0.9)
    variables = _variables(module, x)
    y, updates = module.apply(variables, jnp.asarray(x, jnp.bfloat16), use_running_average=False, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16 and updates["batch_stats"]["var"].dtype == jnp.float32
    want, _ = _per_shard_reference(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), variables, 4)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=2e-2, atol=2e-2)


def _collectives(fn, *args) -> dict[str, int]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    return {name: text.count(f" {name}(") + text.count(f" {name}-start(") for name in COLLECTIVES}


def test_groups_aligned_with_shards_normalise_without_cross_device_communication():
    mesh = mesh_lib.make_mesh()
    x = jax.device_put(_inputs(DEVICES * PER_DEVICE), mesh_lib.batch_sharded(mesh))
    variables = jax.device_put(_variables(norms.GroupedBatchNorm(), np.asarray(x)), mesh_lib.replicated(mesh))

    def output_only(module):
        return lambda v, x: module.apply(v, x, mutable=["batch_stats"])[0]

    grouped = norms.GroupedBatchNorm(group_size=PER_DEVICE, use_running_average=False)
    aligned = _collectives(output_only(grouped), variables, x)
    assert sum(aligned.values()) == 0, aligned
    # The check can see communication: whole-batch statistics need an all-reduce.
    whole = _collectives(output_only(nn.BatchNorm(use_running_average=False)), variables, x)
    assert whole["all-reduce"] > 0, whole


def test_resnet_and_unet_take_the_group_size_from_the_config():
    config = default.model_config()
    config.update({"depth": 10, "widths": (8, 8, 8, 8), "norm": "batch", "bn_group_size": 2, "conv_impl": "conv3d"})
    model = build_model(config, num_classes=3)
    assert model.bn_group_size == 2
    x = jnp.asarray(np.random.default_rng(7).normal(size=(4, 8, 8, 8, 1)), jnp.float32)
    plain = ResNet3D10(num_classes=3, widths=(8, 8, 8, 8), conv_impl="conv3d")
    shapes = jax.eval_shape(plain.init, jax.random.key(0), x[:1])
    assert jax.tree.map(jnp.shape, jax.eval_shape(model.init, jax.random.key(0), x[:1])) == jax.tree.map(jnp.shape, shapes)
    rng = np.random.default_rng(8)  # random weights: a real init costs ~20 s on a shared 2-core CPU
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)
    # Examples 0-1 and 2-3 are normalised separately: the first pair's logits do not depend on the second.
    train_logits = jax.jit(lambda net, x: net.apply(variables, x, train=True, mutable=["batch_stats"])[0], static_argnums=0)
    logits = train_logits(model, x)
    changed = x.at[2:].multiply(5.0)
    np.testing.assert_allclose(np.asarray(logits[:2]), np.asarray(train_logits(model, changed)[:2]), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(train_logits(plain, changed)[:2]) - np.asarray(logits[:2])).max() > 1e-3
    unet = UNet3D(encoder=build_model(config, num_classes=None), num_classes=2)
    unet_vars = jax.tree.map(jnp.zeros_like, jax.eval_shape(unet.init, jax.random.key(0), x[:1]))
    with pytest.raises(ValueError, match="group size 2 does not divide the batch of 3"):
        unet.apply(unet_vars, x[:3], train=True, mutable=["batch_stats"])


def test_group_size_with_group_norm_or_negative_is_an_error():
    with pytest.raises(ValueError, match=r"bn_group_size=4 applies to norm='batch' only"):
        norm_factory("group", True, momentum=0.9, dtype=jnp.float32, param_dtype=jnp.float32, group_size=4)
    with pytest.raises(ValueError, match="must be >= 0"):
        norm_factory("batch", True, momentum=0.9, dtype=jnp.float32, param_dtype=jnp.float32, group_size=-2)

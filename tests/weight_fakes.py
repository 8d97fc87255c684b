"""Weight-conversion helpers shared by the tests of vdt_jax.weights (random variables, templates, expected keys)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests import fakes
from vdt_jax.models.resnet3d import resnet3d


def random_variables(depth: int, seed: int = 0, in_channels: int = 1, **model_kwargs) -> dict:
    """Variables of a vdt-jax ResNet of `depth` filled with random numbers."""
    return fakes.random_variables(resnet3d(depth, **model_kwargs), (1, 3, 32, 32, in_channels), seed)


def shape_template(depth: int, in_channels: int = 1, **model_kwargs) -> dict:
    model = resnet3d(depth, **model_kwargs)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 32, 32, in_channels)))


def assert_trees_equal(actual: dict, expected: dict) -> None:
    flat_actual = dict(jax.tree_util.tree_leaves_with_path(actual))
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    assert flat_actual.keys() == flat_expected.keys()
    for path, value in flat_expected.items():
        assert flat_actual[path].dtype == value.dtype, path
        np.testing.assert_array_equal(flat_actual[path], value, err_msg=jax.tree_util.keystr(path))


def torchvision_keys(stage_sizes, bottleneck: bool, classifier: bool = True) -> list[str]:
    def bn(name):
        return [f"{name}.{leaf}" for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1")]
    for stage, blocks in enumerate(stage_sizes, start=1):
        for i in range(blocks):
            prefix = f"layer{stage}.{i}"
            for n in (1, 2, 3) if bottleneck else (1, 2):
                keys += [f"{prefix}.conv{n}.weight", *bn(f"{prefix}.bn{n}")]
            if i == 0 and (stage > 1 or bottleneck):
                keys += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
    return keys + (["fc.weight", "fc.bias"] if classifier else [])

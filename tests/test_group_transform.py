"""Tests of vdt_jax.models.group_transform (and the DeepLesion input of vdt_jax.data.ct_slices): FPN levels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdt_jax.data import ct_slices
from vdt_jax.models.group_transform import GroupTransformBackbone
from vdt_jax.models.p3d import p3d


def gtm_backbone(arch: str, variant: str, conversion: str, **kwargs) -> GroupTransformBackbone:
    return GroupTransformBackbone(p3d(arch, variant, num_classes=None, **kwargs), conversion=conversion)


def test_deeplesion_slices_through_backbone_and_gtm_give_fpn_levels():
    hu = np.random.default_rng(0).uniform(-1500, 2000, (2, ct_slices.DEEPLESION_SLICES, 64, 64))
    hu[0, 0, 0, :3] = (-1024, 1050, 3000)
    x = ct_slices.slices_to_input(hu)
    assert x.shape == (2, 9, 64, 64, 1) and x.dtype == np.float32
    low, high = -123.675 / 58.395, (255 - 123.675) / 58.395
    np.testing.assert_allclose(x[0, 0, 0, :3, 0], (low, high, high), rtol=1e-6)
    assert x.min() >= low - 1e-6 and x.max() <= high + 1e-6
    # The full-size MP3D-63 + GTM at the reference's 512 x 512 test scale (shapes only).
    full = gtm_backbone("mp3d", "63", "groupconv", norm="group")
    variables = jax.eval_shape(full.init, jax.random.key(0), jnp.zeros((1, 9, 64, 64, 1)))
    levels = jax.eval_shape(full.apply, variables, jnp.zeros((2, 9, 512, 512, 1)))
    assert {k: v.shape for k, v in levels.items()} == {
        "layer1": (2, 128, 128, 256), "layer2": (2, 64, 64, 512),
        "layer3": (2, 32, 32, 1024), "layer4": (2, 16, 16, 2048),
    }  # fmt: skip
    # A narrow one computed on the windowed slices: strides 4, 8, 16, 32; finite maps.
    for arch, conversion in (("mp3d", "groupconv"), ("p3d", "centre")):
        model = gtm_backbone(arch, "18ba", conversion, widths=(8, 8, 8, 8))
        levels = model.apply(model.init(jax.random.key(0), x), x)
        assert [v.shape for v in levels.values()] == [(2, 16, 16, 8), (2, 8, 8, 8), (2, 4, 4, 8), (2, 2, 2, 8)]
        assert all(np.isfinite(np.asarray(v)).all() for v in levels.values())


def test_gtm_needs_the_slices_it_was_built_for():
    model = gtm_backbone("mp3d", "18ba", "groupconv", widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="built for 9 slices but layer1 has depth 5"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 5, 32, 32, 1)))


def test_gtm_starts_as_the_slice_average():
    model = gtm_backbone("mp3d", "18ba", "groupconv", widths=(8, 8, 8, 8))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 9, 32, 32, 1), np.float32))
    variables = model.init(jax.random.key(0), x)
    levels = model.apply(variables, x)
    features = model.backbone.apply({k: v["backbone"] for k, v in variables.items()}, x)
    np.testing.assert_allclose(levels["layer3"], features["layer3"].mean(axis=1), rtol=1e-5, atol=1e-6)

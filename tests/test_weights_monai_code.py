"""Tests of vdt_jax.weights.monai_code: the MONAI code printed for an exported model."""

from __future__ import annotations

import pytest

from vdt_jax.weights import monai_code


def test_monai_code_patches_strides_only_where_needed():
    strided = monai_code.monai_code(18, num_classes=2, depth_stride=True, path="w.pth")
    assert "resnet18(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False" in (
        strided
    )
    assert ".stride =" not in strided
    vdt = monai_code.monai_code(50, depth_stride=False, downsample_bias=True, path="w.safetensors")
    assert "conv1_t_stride=(1, 2, 2), bias_downsample=True, feed_forward=False" in vdt
    assert "model.maxpool.stride = (1, 2, 2)" in vdt and "model.layer4[0].conv2.stride = (1, 2, 2)" in vdt
    assert "load_file('w.safetensors')" in vdt
    with pytest.raises(ValueError, match="applies `norm` to the stem only"):
        monai_code.monai_code(18, norm="group")

"""Tests of vdt_jax.weights.load: filling a model from a state dict, adapting it, and refusing what does not fit.

Numeric parity with MONAI's PyTorch ResNets is in test_export.py; these tests
need no forward pass (random numpy variables shaped by jax.eval_shape).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.weight_fakes import assert_trees_equal, random_variables, shape_template
from vdt_jax.weights import keys, load


@pytest.mark.parametrize("reduction, verb", [("sum", "summed"), ("mean", "averaged")])
def test_three_channel_first_conv_is_reduced(reduction, verb):
    state = keys.to_torch_state_dict(random_variables(10, seed=2, in_channels=3, num_classes=2))
    rgb_kernel = state["conv1.weight"]  # (64, 3, 7, 7, 7)
    reduced = rgb_kernel.sum(axis=1) if reduction == "sum" else rgb_kernel.mean(axis=1)
    loaded, report = load.from_torch_state_dict(state, shape_template(10, num_classes=2), in_channels_reduction=reduction)
    kernel = loaded["params"]["conv1"]["kernel"]
    assert kernel.shape == (7, 7, 7, 1, 64)
    np.testing.assert_allclose(kernel[..., 0, :], reduced.transpose(1, 2, 3, 0), rtol=1e-6)
    assert report.adapted == {"conv1.weight": f"3 input channels {verb} to 1"}
    assert f"adapted conv1.weight: 3 input channels {verb} to 1" in report.summary()


def test_first_conv_is_spread_over_more_model_channels():
    state = keys.to_torch_state_dict(random_variables(10, in_channels=3, num_classes=2))
    loaded, report = load.from_torch_state_dict(state, shape_template(10, in_channels=2, num_classes=2))
    kernel = loaded["params"]["conv1"]["kernel"]
    expected = state["conv1.weight"].sum(axis=1).transpose(1, 2, 3, 0) / 2
    np.testing.assert_allclose(kernel[..., 0, :], expected, rtol=1e-6)
    np.testing.assert_array_equal(kernel[..., 0, :], kernel[..., 1, :])
    assert "repeated to 2 and divided by 2" in report.adapted["conv1.weight"]


def test_classifier_with_other_class_count_is_newly_initialised():
    state = keys.to_torch_state_dict(random_variables(18, seed=3, num_classes=1000))
    template = random_variables(18, seed=4, num_classes=2)
    loaded, report = load.from_torch_state_dict(state, template)
    np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], template["params"]["fc"]["kernel"])
    np.testing.assert_array_equal(
        loaded["params"]["layer4_1"]["conv2"]["kernel"], keys.to_flax_layout(state["layer4.1.conv2.weight"])
    )
    why = "classifier has 1000 classes in the file, 2 in the model"
    assert report.new == {"fc": why}
    assert report.unused["fc.weight"] == report.unused["fc.bias"] == f"not loaded: {why}"
    assert "fc.weight" not in report.loaded and len(report.loaded) == len(state) - 20 - 2
    assert f"newly initialised fc: {why}" in report.summary()
    with pytest.raises(keys.WeightConversionError, match="pass variables from model.init"):
        load.from_torch_state_dict(state, shape_template(18, num_classes=2))


def test_backbone_model_leaves_the_file_classifier_unused():
    state = keys.to_torch_state_dict(random_variables(10, num_classes=5), keys="mmcls")
    loaded, report = load.from_torch_state_dict(state, shape_template(10, num_classes=None))
    assert "fc" not in loaded["params"]
    assert report.unused["fc.weight"] == "the model has no classifier (backbone)"


def test_zero_shortcut_bias_is_ignored_and_nonzero_rejected():
    variables = random_variables(18, num_classes=2)
    state = keys.to_torch_state_dict(variables, downsample_bias=True)
    loaded, report = load.from_torch_state_dict(state, variables)
    assert_trees_equal(loaded, variables)
    assert report.unused["layer4.0.downsample.0.bias"].startswith("all-zero shortcut conv bias")
    state["layer3.0.downsample.0.bias"] = np.full(256, 0.1, np.float32)
    with pytest.raises(keys.WeightConversionError, match=r"not all zeros: layer3\.0\.downsample\.0\.bias\. vdt-jax"):
        load.from_torch_state_dict(state, variables)


def test_deeper_resnet_file_is_rejected_with_both_architectures_named():
    state = keys.to_torch_state_dict(random_variables(34, num_classes=2))
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(state, shape_template(18, num_classes=2), source="r3d34.pth")
    message = str(error.value)
    assert "r3d34.pth does not fit the model; nothing was loaded." in message
    assert "The file holds a ResNet-34 (basic blocks (3, 4, 6, 3)), the model is a ResNet-18" in message
    assert "unexpected in the file:" in message and "layer1.2.conv1.weight (64, 64, 3, 3, 3)" in message


def test_bottleneck_file_into_basic_model_lists_shape_mismatches():
    state = keys.to_torch_state_dict(random_variables(50, num_classes=2))
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(state, shape_template(18, num_classes=2))
    message = str(error.value)
    assert "ResNet-50 (bottleneck blocks (3, 4, 6, 3)), the model is a ResNet-18 (basic blocks" in message
    assert "layer1.0.conv1.weight: file (64, 64, 1, 1, 1), model (64, 64, 3, 3, 3)" in message
    assert "shape mismatches (PyTorch layout):" in message and "... and 12 more" in message


def test_missing_keys_are_listed_with_shapes():
    variables = random_variables(18, num_classes=2)
    state = keys.to_torch_state_dict(variables)
    del state["layer3.1.bn2.running_var"], state["fc.bias"]
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(state, variables)
    message = str(error.value)
    assert "2 missing from the file:" in message
    assert "layer3.1.bn2.running_var (256,)" in message and "fc.bias (2,)" in message


def test_type_a_shortcut_file_is_explained():
    variables = random_variables(18, num_classes=2)
    state = keys.to_torch_state_dict(variables, keys="medicalnet")
    state = {k: v for k, v in state.items() if ".downsample." not in k}
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(state, variables)
    message = str(error.value)
    assert "no shortcut (downsample.*) weights" in message and "type-A shortcut" in message
    assert "layer2.0.downsample.0.weight (128, 64, 1, 1, 1)" in message


def test_unknown_in_channels_reduction():
    variables = random_variables(10, num_classes=2)
    with pytest.raises(ValueError, match="unknown in_channels_reduction 'max'"):
        load.from_torch_state_dict(keys.to_torch_state_dict(variables), variables, in_channels_reduction="max")

"""Tests of vdt_jax.weights.keys: torchvision-style names, layouts and key styles of a Flax ResNet."""

from __future__ import annotations

import numpy as np
import pytest

from tests.weight_fakes import assert_trees_equal, random_variables, torchvision_keys
from vdt_jax.weights import keys, load


def test_state_dict_has_torchvision_keys_and_layouts():
    variables = random_variables(18, num_classes=10)
    state = keys.to_torch_state_dict(variables)
    assert list(state) == torchvision_keys((2, 2, 2, 2), bottleneck=False)
    params, stats = variables["params"], variables["batch_stats"]
    assert state["conv1.weight"].shape == (64, 1, 7, 7, 7)
    kernel = params["layer2_0"]["conv1"]["kernel"]  # (3, 3, 3, 64, 128)
    assert state["layer2.0.conv1.weight"].shape == (128, 64, 3, 3, 3)
    assert state["layer2.0.conv1.weight"][5, 7, 0, 1, 2] == kernel[0, 1, 2, 7, 5]
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1, 1)
    np.testing.assert_array_equal(state["layer2.0.downsample.1.running_var"], stats["layer2_0"]["downsample_bn"]["var"])
    np.testing.assert_array_equal(state["layer3.1.bn2.weight"], params["layer3_1"]["bn2"]["scale"])
    assert state["fc.weight"].shape == (10, 512)
    assert state["fc.weight"][3, 100] == params["fc"]["kernel"][100, 3]
    counter = state["bn1.num_batches_tracked"]
    assert counter.dtype == np.int64 and counter.shape == () and counter == 0
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))


def test_bottleneck_state_dict_keys():
    state = keys.to_torch_state_dict(random_variables(50, num_classes=3))
    assert list(state) == torchvision_keys((3, 4, 6, 3), bottleneck=True)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1, 1)
    assert state["fc.weight"].shape == (3, 2048)


@pytest.mark.parametrize(
    "style, first, classifier",
    [
        ("plain", "conv1.weight", "fc.weight"),
        ("monai", "conv1.weight", "fc.weight"),
        ("mmcls", "backbone.conv1.weight", "head.fc.weight"),
        ("medicalnet", "module.conv1.weight", "module.fc.weight"),
    ],
)
def test_key_styles(style, first, classifier):
    variables = random_variables(10, num_classes=4)
    state = keys.to_torch_state_dict(variables, keys=style)
    assert list(state)[0] == first and classifier in state
    backbone = keys.to_torch_state_dict(variables, keys=style, backbone_only=True)
    assert set(state) - set(backbone) == {classifier, classifier.replace("weight", "bias")}


def test_downsample_bias_adds_zero_shortcut_biases():
    state = keys.to_torch_state_dict(random_variables(18, num_classes=2), downsample_bias=True)
    biases = [key for key in state if key.endswith("downsample.0.bias")]
    assert biases == [f"layer{s}.0.downsample.0.bias" for s in (2, 3, 4)]
    assert state["layer3.0.downsample.0.bias"].shape == (256,) and not state["layer3.0.downsample.0.bias"].any()
    order = list(state)
    assert order.index("layer2.0.downsample.0.bias") == order.index("layer2.0.downsample.0.weight") + 1


def test_group_norm_has_no_running_stats():
    variables = random_variables(10, num_classes=2, norm="group")
    state = keys.to_torch_state_dict(variables)
    assert "bn1.weight" in state and not any("running" in k or "num_batches" in k for k in state)
    loaded, report = load.from_torch_state_dict(state, variables)
    assert_trees_equal(loaded, variables)
    assert not report.unused


def test_unknown_key_style():
    variables = random_variables(10, num_classes=2)
    with pytest.raises(ValueError, match="unknown key style 'timm'"):
        keys.to_torch_state_dict(variables, keys="timm")

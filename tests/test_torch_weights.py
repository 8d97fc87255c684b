"""Tests for vdt_jax.torch_weights: names, layouts, round trips, adaptation, and bad inputs.

Numeric parity with MONAI's PyTorch ResNets is in test_export_monai.py; these
tests need no forward pass (random numpy variables shaped by jax.eval_shape).
"""

from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import fakes
from vdt_jax import torch_weights as tw
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


# ---------------------------------------------------------------- Flax -> PyTorch


def test_state_dict_has_torchvision_keys_and_layouts():
    variables = random_variables(18, num_classes=10)
    state = tw.to_torch_state_dict(variables)
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
    state = tw.to_torch_state_dict(random_variables(50, num_classes=3))
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
    state = tw.to_torch_state_dict(variables, keys=style)
    assert list(state)[0] == first and classifier in state
    backbone = tw.to_torch_state_dict(variables, keys=style, backbone_only=True)
    assert set(state) - set(backbone) == {classifier, classifier.replace("weight", "bias")}


def test_downsample_bias_adds_zero_shortcut_biases():
    state = tw.to_torch_state_dict(random_variables(18, num_classes=2), downsample_bias=True)
    biases = [key for key in state if key.endswith("downsample.0.bias")]
    assert biases == [f"layer{s}.0.downsample.0.bias" for s in (2, 3, 4)]
    assert state["layer3.0.downsample.0.bias"].shape == (256,) and not state["layer3.0.downsample.0.bias"].any()
    keys = list(state)
    assert keys.index("layer2.0.downsample.0.bias") == keys.index("layer2.0.downsample.0.weight") + 1


def test_group_norm_has_no_running_stats():
    variables = random_variables(10, num_classes=2, norm="group")
    state = tw.to_torch_state_dict(variables)
    assert "bn1.weight" in state and not any("running" in k or "num_batches" in k for k in state)
    loaded, report = tw.from_torch_state_dict(state, variables)
    assert_trees_equal(loaded, variables)
    assert not report.unused


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "extension, style",
    [(".safetensors", "plain"), (".safetensors", "mmcls"), (".pth", "plain"), (".pth", "medicalnet")],
)
def test_round_trip_is_bit_identical(tmp_path, extension, style):
    if extension == ".pth":
        pytest.importorskip("torch")
    variables = random_variables(18, seed=1, num_classes=7)
    path = tmp_path / f"r3d18{extension}"
    state = tw.export_torch_weights(variables, path, keys=style)
    loaded, report = tw.load_torch_weights(path, shape_template(18, num_classes=7))
    assert_trees_equal(loaded, variables)
    assert len(report.loaded) == len(state) - 20  # 20 BatchNorm counters in ResNet-18
    assert set(report.unused) == {k for k in report.unused if k.endswith("num_batches_tracked")}
    assert not report.adapted and not report.skipped


def test_safetensors_round_trip_works_without_torch(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is hidden in this test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    variables = random_variables(10, num_classes=2)
    tw.export_torch_weights(variables, tmp_path / "w.safetensors")
    loaded, _ = tw.load_torch_weights(tmp_path / "w.safetensors", variables)
    assert_trees_equal(loaded, variables)
    with pytest.raises(ImportError, match="needs PyTorch"):
        tw.export_torch_weights(variables, tmp_path / "w.pth")


# -------------------------------------------------------- PyTorch -> Flax surgery


@pytest.mark.parametrize("reduction, verb", [("sum", "summed"), ("mean", "averaged")])
def test_three_channel_first_conv_is_reduced(reduction, verb):
    state = tw.to_torch_state_dict(random_variables(10, seed=2, in_channels=3, num_classes=2))
    rgb_kernel = state["conv1.weight"]  # (64, 3, 7, 7, 7)
    reduced = rgb_kernel.sum(axis=1) if reduction == "sum" else rgb_kernel.mean(axis=1)
    loaded, report = tw.from_torch_state_dict(state, shape_template(10, num_classes=2), in_channels_reduction=reduction)
    kernel = loaded["params"]["conv1"]["kernel"]
    assert kernel.shape == (7, 7, 7, 1, 64)
    np.testing.assert_allclose(kernel[..., 0, :], reduced.transpose(1, 2, 3, 0), rtol=1e-6)
    assert report.adapted == {"conv1.weight": f"3 input channels {verb} to 1"}
    assert f"adapted conv1.weight: 3 input channels {verb} to 1" in report.summary()


def test_first_conv_is_spread_over_more_model_channels():
    state = tw.to_torch_state_dict(random_variables(10, in_channels=3, num_classes=2))
    loaded, report = tw.from_torch_state_dict(state, shape_template(10, in_channels=2, num_classes=2))
    kernel = loaded["params"]["conv1"]["kernel"]
    expected = state["conv1.weight"].sum(axis=1).transpose(1, 2, 3, 0) / 2
    np.testing.assert_allclose(kernel[..., 0, :], expected, rtol=1e-6)
    np.testing.assert_array_equal(kernel[..., 0, :], kernel[..., 1, :])
    assert "repeated to 2 and divided by 2" in report.adapted["conv1.weight"]


def test_classifier_with_other_class_count_is_newly_initialised():
    state = tw.to_torch_state_dict(random_variables(18, seed=3, num_classes=1000))
    template = random_variables(18, seed=4, num_classes=2)
    loaded, report = tw.from_torch_state_dict(state, template)
    np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], template["params"]["fc"]["kernel"])
    np.testing.assert_array_equal(
        loaded["params"]["layer4_1"]["conv2"]["kernel"], tw.to_flax_layout(state["layer4.1.conv2.weight"])
    )
    why = "classifier has 1000 classes in the file, 2 in the model"
    assert report.skipped == {"fc.weight": why, "fc.bias": why}
    assert "fc.weight" not in report.loaded and len(report.loaded) == len(state) - 20 - 2
    assert f"newly initialised fc.weight: {why}" in report.summary()
    with pytest.raises(tw.WeightConversionError, match="pass variables from model.init"):
        tw.from_torch_state_dict(state, shape_template(18, num_classes=2))


def test_backbone_model_leaves_the_file_classifier_unused():
    state = tw.to_torch_state_dict(random_variables(10, num_classes=5), keys="mmcls")
    loaded, report = tw.from_torch_state_dict(state, shape_template(10, num_classes=None))
    assert "fc" not in loaded["params"]
    assert report.unused["fc.weight"] == "the model has no classifier (backbone)"


def test_zero_shortcut_bias_is_ignored_and_nonzero_rejected():
    variables = random_variables(18, num_classes=2)
    state = tw.to_torch_state_dict(variables, downsample_bias=True)
    loaded, report = tw.from_torch_state_dict(state, variables)
    assert_trees_equal(loaded, variables)
    assert report.unused["layer4.0.downsample.0.bias"].startswith("all-zero shortcut conv bias")
    state["layer3.0.downsample.0.bias"] = np.full(256, 0.1, np.float32)
    with pytest.raises(tw.WeightConversionError, match=r"not all zeros: layer3\.0\.downsample\.0\.bias\. vdt-jax"):
        tw.from_torch_state_dict(state, variables)


# ------------------------------------------------------------------- bad inputs


def test_deeper_resnet_file_is_rejected_with_both_architectures_named():
    state = tw.to_torch_state_dict(random_variables(34, num_classes=2))
    with pytest.raises(tw.WeightConversionError) as error:
        tw.from_torch_state_dict(state, shape_template(18, num_classes=2), source="r3d34.pth")
    message = str(error.value)
    assert "r3d34.pth does not fit the model; nothing was loaded." in message
    assert "The file holds a ResNet-34 (basic blocks (3, 4, 6, 3)), the model is a ResNet-18" in message
    assert "unexpected in the file:" in message and "layer1.2.conv1.weight (64, 64, 3, 3, 3)" in message


def test_bottleneck_file_into_basic_model_lists_shape_mismatches():
    state = tw.to_torch_state_dict(random_variables(50, num_classes=2))
    with pytest.raises(tw.WeightConversionError) as error:
        tw.from_torch_state_dict(state, shape_template(18, num_classes=2))
    message = str(error.value)
    assert "ResNet-50 (bottleneck blocks (3, 4, 6, 3)), the model is a ResNet-18 (basic blocks" in message
    assert "layer1.0.conv1.weight: file (64, 64, 1, 1, 1), model (64, 64, 3, 3, 3)" in message
    assert "shape mismatches (PyTorch layout):" in message and "... and 12 more" in message


def test_missing_keys_are_listed_with_shapes():
    variables = random_variables(18, num_classes=2)
    state = tw.to_torch_state_dict(variables)
    del state["layer3.1.bn2.running_var"], state["fc.bias"]
    with pytest.raises(tw.WeightConversionError) as error:
        tw.from_torch_state_dict(state, variables)
    message = str(error.value)
    assert "2 missing from the file:" in message
    assert "layer3.1.bn2.running_var (256,)" in message and "fc.bias (2,)" in message


def test_type_a_shortcut_file_is_explained():
    variables = random_variables(18, num_classes=2)
    state = tw.to_torch_state_dict(variables, keys="medicalnet")
    state = {k: v for k, v in state.items() if ".downsample." not in k}
    with pytest.raises(tw.WeightConversionError) as error:
        tw.from_torch_state_dict(state, variables)
    message = str(error.value)
    assert "no shortcut (downsample.*) weights" in message and "type-A shortcut" in message
    assert "layer2.0.downsample.0.weight (128, 64, 1, 1, 1)" in message


def test_truncated_safetensors_file(tmp_path):
    path = tmp_path / "w.safetensors"
    tw.export_torch_weights(random_variables(10, num_classes=2), path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(tw.WeightConversionError, match="not a readable safetensors file .truncated or corrupt"):
        tw.read_state_dict(path)


def test_truncated_pth_file(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "w.pth"
    tw.export_torch_weights(random_variables(10, num_classes=2), path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(tw.WeightConversionError, match="not a readable PyTorch file .truncated or corrupt"):
        tw.read_state_dict(path)


def test_pickle_that_is_not_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save([torch.zeros(2), torch.ones(3)], tmp_path / "list.pth")
    with pytest.raises(tw.WeightConversionError, match="holds a list, not a state dict"):
        tw.read_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(tw.WeightConversionError, match="not a state dict.*'epoch': int"):
        tw.read_state_dict(tmp_path / "meta.pth")


def test_nested_state_dict_is_found(tmp_path):
    torch = pytest.importorskip("torch")
    variables = random_variables(10, num_classes=2)
    state = tw.to_torch_state_dict(variables, keys="mmcls")
    nested = {"meta": {"epoch": 100}, "state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}
    torch.save(nested, tmp_path / "c.pth")
    loaded, _ = tw.load_torch_weights(tmp_path / "c.pth", variables)
    assert_trees_equal(loaded, variables)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_that_would_run_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"conv1.weight": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(tw.WeightConversionError, match="refused to unpickle.*unsupported GLOBAL") as error:
        tw.read_state_dict(tmp_path / "evil.pth")
    assert "weights_only` set to `False`" not in str(error.value)
    with open(tmp_path / "evil.pt", "wb") as f:  # a bare pickle, not torch's zip format
        pickle.dump({"a": _RunsCode()}, f, protocol=2)
    with pytest.raises(tw.WeightConversionError, match="refused to unpickle|not a readable PyTorch file"):
        tw.read_state_dict(tmp_path / "evil.pt")


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(tw.WeightConversionError, match=r"unknown weight file extension '\.npz'"):
        tw.read_state_dict(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no weight file at .*nowhere.pth"):
        tw.read_state_dict(tmp_path / "nowhere.pth")
    with pytest.raises(tw.WeightConversionError, match="unknown weight file extension"):
        tw.write_state_dict({}, tmp_path / "w.h5")


def test_invalid_options():
    variables = random_variables(10, num_classes=2)
    with pytest.raises(ValueError, match="unknown key style 'timm'"):
        tw.to_torch_state_dict(variables, keys="timm")
    with pytest.raises(ValueError, match="unknown in_channels_reduction 'max'"):
        tw.from_torch_state_dict(tw.to_torch_state_dict(variables), variables, in_channels_reduction="max")


# ------------------------------------------------------------------ MONAI code


def test_monai_code_patches_strides_only_where_needed():
    strided = tw.monai_code(18, num_classes=2, depth_stride=True, path="w.pth")
    assert "resnet18(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False" in (
        strided
    )
    assert ".stride =" not in strided
    vdt = tw.monai_code(50, depth_stride=False, downsample_bias=True, path="w.safetensors")
    assert "conv1_t_stride=(1, 2, 2), bias_downsample=True, feed_forward=False" in vdt
    assert "model.maxpool.stride = (1, 2, 2)" in vdt and "model.layer4[0].conv2.stride = (1, 2, 2)" in vdt
    assert "load_file('w.safetensors')" in vdt
    with pytest.raises(ValueError, match="applies `norm` to the stem only"):
        tw.monai_code(18, norm="group")

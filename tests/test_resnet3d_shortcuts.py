"""3D ResNet shortcut options and the files that need them: the reference release's forced layer1 shortcut, MedicalNet's type A.

Parity is against MONAI's PyTorch ResNet with random weights and BatchNorm
statistics: type A through MONAI's own `shortcut_type="A"`, the forced shortcut
through a MONAI ResNet-18 given a 1x1x1 conv + BN shortcut in layer1[0]. The
files are written in the layouts users have: MedicalNet's (`module.` keys
nested under "state_dict") and the reference's mmcls release (meta +
state_dict, `backbone.*`, `head.fc.*`, or stripped by its publishing script).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

from tests.fakes import random_variables  # noqa: E402
import configs.finetune_default  # noqa: E402
from tests.test_export import assert_parity, monai_resnet, randomise_monai, torch_outputs, volume  # noqa: E402
from vdt_jax.models.factory import build_model  # noqa: E402
from vdt_jax.weights import keys, load, pretrained  # noqa: E402
from vdt_jax.models.resnet3d import _shortcut, resnet3d  # noqa: E402


def param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def shapes(model, input_shape=(1, 3, 32, 32, 1)):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))


def test_force_downsample_adds_only_the_layer1_shortcut():
    plain, forced = shapes(resnet3d(18)), shapes(resnet3d(18, force_downsample=True))
    assert "downsample_conv" not in plain["params"]["layer1_0"]
    assert forced["params"]["layer1_0"]["downsample_conv"]["kernel"].shape == (1, 1, 1, 64, 64)
    assert set(forced["batch_stats"]["layer1_0"]) == {"bn1", "bn2", "downsample_bn"}
    assert "downsample_conv" not in forced["params"]["layer1_1"]
    assert param_count(forced["params"]) - param_count(plain["params"]) == 64 * 64 + 2 * 64
    # Bottleneck networks have that shortcut anyway (64 -> 256 channels): nothing changes.
    assert param_count(shapes(resnet3d(50, force_downsample=True))) == param_count(shapes(resnet3d(50)))


def test_forced_shortcut_matches_a_monai_resnet_with_that_shortcut():
    model = resnet3d(18, num_classes=5, depth_stride=True, force_downsample=True)
    x = volume((1, 16, 32, 32, 1), seed=6)
    variables = random_variables(model, x.shape, seed=6)
    state = keys.to_torch_state_dict(variables, keys="monai")
    assert "layer1.0.downsample.0.weight" in state and "layer1.0.downsample.1.running_var" in state
    net = monai_nets.resnet18(
        spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False, num_classes=5
    )
    net.layer1[0].downsample = torch.nn.Sequential(torch.nn.Conv3d(64, 64, 1, bias=False), torch.nn.BatchNorm3d(64))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert_parity(model.apply(variables, x), torch_outputs(net.eval(), x), "force_downsample vs patched MONAI")


def test_medicalnet_file_loads_computes_and_exports_back(tmp_path):
    torch.manual_seed(1)
    net = monai_nets.resnet18(
        spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="A", num_classes=5
    )
    net = randomise_monai(net, seed=1)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}  # MedicalNet's DataParallel keys
    assert not any("downsample" in key for key in state)
    torch.save({"state_dict": state}, tmp_path / "resnet_18_23dataset.pth")  # MedicalNet nests its state dict
    model = resnet3d(18, num_classes=5, depth_stride=True, shortcut_type="A")
    x = volume((2, 16, 32, 32, 1), seed=7)
    variables, report = load.load_torch_weights(tmp_path / "resnet_18_23dataset.pth", shapes(model, x.shape))
    assert len(report.loaded) == 87 and not report.adapted and not report.new  # stem 5, 8 blocks x 10, fc 2
    assert len(report.unused) == 17 and all(name.endswith("num_batches_tracked") for name in report.unused)
    assert_parity(model.apply(variables, x), torch_outputs(net, x), "MedicalNet-style resnet18 (type A) -> Flax")
    back = keys.to_torch_state_dict(variables, keys="medicalnet")
    assert list(back) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    with pytest.raises(keys.WeightConversionError) as error:  # the same file into the default type-B model
        load.load_torch_weights(tmp_path / "resnet_18_23dataset.pth", shapes(resnet3d(18, num_classes=5)))
    assert 'type-A shortcut (MedicalNet). Set model.shortcut_type="A"' in str(error.value)
    assert "layer2.0.downsample.0.weight (128, 64, 1, 1, 1)" in str(error.value)


# ------------------------------------------------------- the reference's release


def release_network(seed: int = 2):
    """A randomised VDT pre-training ResNet-18 with the release's extra layer1.0 shortcut, as a MONAI module."""
    torch.manual_seed(seed)
    net = monai_resnet(18, depth_stride=False, num_classes=10)
    net.layer1[0].downsample = torch.nn.Sequential(torch.nn.Conv3d(64, 64, 1, bias=False), torch.nn.BatchNorm3d(64))
    return randomise_monai(net, seed)


def write_release(net, path, remove_backbone: bool = False) -> None:
    """The reference's published layout: an mmcls checkpoint, meta and state_dict, `backbone.*` and `head.fc.*`.

    Its publishing script can also drop the head and strip `backbone.` (--remove_backbone).
    """
    state = {("head." if k.startswith("fc.") else "backbone.") + k: v for k, v in net.state_dict().items()}
    if remove_backbone:
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"meta": {"epoch": 100, "mmcls_version": "0.x", "CLASSES": [str(i) for i in range(10)]},
                "state_dict": state}, path)  # fmt: skip


def test_reference_release_loads_completely_with_force_downsample(tmp_path):
    net, path = release_network(), tmp_path / "res3d18_imagenet_BN_73.07-5ff2ecb7.pth"
    write_release(net, path)
    model = resnet3d(18, num_classes=10, force_downsample=True)
    x = volume((2, 3, 32, 32, 1), seed=3)
    variables, report = load.load_torch_weights(path, shapes(model, x.shape))
    assert len(report.loaded) == 107 and "layer1.0.downsample.0.weight" in report.loaded  # 102 + the forced 5
    assert not report.new and not report.adapted and len(report.unused) == 21  # BatchNorm step counters
    assert_parity(model.apply(variables, x), torch_outputs(net, x), "reference release (force_downsample)")
    # The fine-tuning path: config.model.force_downsample reaches the model init_from fills.
    config = configs.finetune_default.get_config("classification")
    config.model.depth, config.model.widths, config.model.force_downsample = 18, (64, 128, 256, 512), True
    template = build_model(config.model, num_classes=2).init(jax.random.key(0), jnp.zeros((1, 3, 16, 16, 1)))
    loaded, report = pretrained.initial_variables(str(path), template)
    assert report.new == {"fc": "classifier has 10 classes in the file, 2 in the model"}
    assert len(report.loaded) == 105  # the backbone, its forced shortcut included
    np.testing.assert_array_equal(
        loaded["batch_stats"]["layer1_0"]["downsample_bn"]["var"], net.layer1[0].downsample[1].running_var.numpy()
    )
    write_release(net, tmp_path / "published.pth", remove_backbone=True)
    backbone = resnet3d(18, num_classes=None, force_downsample=True)
    _, report = load.load_torch_weights(tmp_path / "published.pth", shapes(backbone))
    assert len(report.loaded) == 105


def test_release_shortcut_is_refused_not_dropped_without_the_option(tmp_path):
    write_release(release_network(), tmp_path / "release.pth")
    with pytest.raises(keys.WeightConversionError) as error:
        load.load_torch_weights(tmp_path / "release.pth", shapes(resnet3d(18, num_classes=10)))
    message = str(error.value)
    assert "nothing was loaded" in message and "Set model.force_downsample=True" in message
    assert "(layer1.0.downsample.0.weight, layer1.0.downsample.1.weight, layer1.0.downsample.1.bias," in message
    assert "6 unexpected in the file:" not in message  # num_batches_tracked is no weight
    assert "5 unexpected in the file:\n  layer1.0.downsample.0.weight (64, 64, 1, 1, 1)" in message
    plain = keys.to_torch_state_dict(random_variables(resnet3d(18, num_classes=10), (1, 3, 32, 32, 1)))
    with pytest.raises(keys.WeightConversionError, match="lacks: set model.force_downsample=False"):
        load.from_torch_state_dict(plain, shapes(resnet3d(18, num_classes=10, force_downsample=True)))


def test_type_a_shortcut_subsamples_and_zero_pads():
    model = resnet3d(10, num_classes=None, widths=(8, 16, 16, 16), shortcut_type="A")
    x = jnp.asarray(volume((1, 3, 16, 16, 1), seed=8))
    variables = model.init(jax.random.key(0), x)
    assert not any("downsample" in name for block in variables["params"].values() for name in block)
    block = model.block_cls(16, (1, 2, 2), None, None, shortcut_type="A")
    features = jnp.arange(2 * 3 * 4 * 4 * 8, dtype=jnp.float32).reshape(2, 3, 4, 4, 8)
    out = _shortcut(block, features, 16)
    assert out.shape == (2, 3, 2, 2, 16)
    np.testing.assert_array_equal(out[..., :8], features[:, :, ::2, ::2])
    assert not np.any(out[..., 8:])


def test_unknown_shortcut_type_is_refused():
    with pytest.raises(ValueError, match="unknown shortcut_type 'C'"):
        shapes(resnet3d(18, shortcut_type="C"))

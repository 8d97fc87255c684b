"""3D ResNet shortcut options: the reference release's forced layer1 shortcut, and MedicalNet's type A.

Parity is against MONAI's PyTorch ResNet with random weights and BatchNorm
statistics: type A through MONAI's own `shortcut_type="A"`, the forced shortcut
through a MONAI ResNet-18 given a 1x1x1 conv + BN shortcut in layer1[0].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

from tests.fakes import random_variables  # noqa: E402
from tests.test_export import assert_parity, randomise_monai, torch_outputs, volume  # noqa: E402
from vdt_jax.weights import keys, load  # noqa: E402
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


def test_medicalnet_style_type_a_resnet_loads_computes_and_exports_back():
    torch.manual_seed(1)
    net = monai_nets.resnet18(
        spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="A", num_classes=5
    )
    net = randomise_monai(net, seed=1)
    state = {f"module.{k}": v.numpy() for k, v in net.state_dict().items()}  # MedicalNet's DataParallel keys
    assert not any("downsample" in key for key in state)
    model = resnet3d(18, num_classes=5, depth_stride=True, shortcut_type="A")
    x = volume((2, 16, 32, 32, 1), seed=7)
    variables, report = load.from_torch_state_dict(state, shapes(model, x.shape))
    assert len(report.loaded) == 87 and not report.adapted and not report.new  # stem 5, 8 blocks x 10, fc 2
    assert_parity(model.apply(variables, x), torch_outputs(net, x), "MONAI resnet18 shortcut_type=A -> Flax")
    back = keys.to_torch_state_dict(variables, keys="medicalnet")
    assert list(back) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


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

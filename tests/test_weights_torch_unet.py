"""The full UNet export: its keys load strictly into the plain-PyTorch TorchUNet3D, which reproduces the Flax logits."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ml_collections  # noqa: E402

from tests.fakes import random_variables  # noqa: E402
from vdt_jax.models.unet3d import build_unet  # noqa: E402
from vdt_jax.weights import files, unet_keys  # noqa: E402
from vdt_jax.weights.keys import WeightConversionError  # noqa: E402

TOLERANCE = 1e-4  # max |torch - flax| / max |flax|


def model_config(**fields) -> ml_collections.ConfigDict:
    import configs.default

    config = configs.default.model_config()
    config.update({"stem_stride": False, "depth_stride": True, "conv_impl": "conv3d", **fields})
    return config


def unet_config(**fields) -> ml_collections.ConfigDict:
    import configs.finetune_default

    config = configs.finetune_default.get_config().unet
    config.update(fields)
    return config


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize(
    "fields, unet, shape, extension",
    [
        ({"widths": (8, 8, 16, 16)}, {}, (1, 16, 32, 32, 1), ".pth"),  # the demo UNet's layout, narrow
        ({"depth": 18, "depth_stride": False, "widths": (8, 16, 16, 32)}, {}, (1, 5, 20, 28, 2), ".safetensors"),  # odd sizes
        ({"depth": 50, "widths": (8, 8, 16, 16), "stem_stride": True}, {}, (1, 16, 32, 32, 1), ".pth"),  # bottleneck blocks
        ({"norm": "group", "widths": (32, 32, 64, 64)}, {}, (1, 8, 16, 16, 1), ".pth"),
        # the BCV/LiTS recipes' decoder: up-conv norm, two head convs of 16, dropout (inactive in evaluation)
        ({"widths": (8, 8, 16, 16)}, {"up_conv_norm": True, "head_channels": 16, "head_convs": 2, "head_dropout": 0.1},
         (1, 16, 32, 32, 1), ".pth"),
    ],
)
def test_full_unet_export_reproduces_the_logits_in_plain_pytorch(tmp_path, fields, unet, shape, extension):
    config, decoder = model_config(**fields), unet_config(**unet)
    model = build_unet(config, decoder, num_classes=4)
    variables = random_variables(model, shape, seed=len(fields))
    path = str(tmp_path / f"unet{extension}")
    state = unet_keys.unet_state_dict(variables)
    files.write_state_dict(state, path)
    code = unet_keys.torch_unet_code(config, decoder, in_channels=shape[-1], num_classes=4, path=path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own generated code, as the model card holds it)
    net = namespace["model"]
    assert list(net.state_dict()) == list(state)  # the documented keys, in module order
    x = np.random.default_rng(0).standard_normal(shape, np.float32)
    expected = np.asarray(model.apply(variables, x, train=False))
    with torch.no_grad():
        actual = net(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())).numpy().transpose(0, 2, 3, 4, 1)
    error = relative_error(actual, expected)
    print(f"UNet {fields}: max relative error {error:.2e} (max |logit| {np.abs(expected).max():.3g})")
    assert actual.shape == expected.shape and error < TOLERANCE


def test_state_dict_keys_follow_the_documented_names():
    config = model_config(widths=(8, 8, 16, 16))
    decoder = unet_config(up_conv_norm=True, head_convs=2)
    variables = random_variables(build_unet(config, decoder, num_classes=3), (1, 16, 32, 32, 1))
    keys = list(unet_keys.unet_state_dict(variables))
    assert keys[:2] == ["encoder.conv1.weight", "encoder.bn1.weight"]
    assert "encoder.layer2.0.downsample.0.weight" in keys and not any(k.startswith("encoder.fc") for k in keys)
    first_up = [k for k in keys if k.startswith("up1.")]
    assert first_up[:4] == ["up1.up_conv.weight", "up1.up_norm.weight", "up1.up_norm.bias", "up1.up_norm.running_mean"]
    assert "up1.conv1.weight" in first_up
    tops = list(dict.fromkeys(k.split(".")[0] for k in keys))
    assert tops[-5:] == ["head_conv", "head_norm", "head_conv2", "head_norm2", "head"]
    assert [k.split(".")[0] for k in keys].index("up1") < [k.split(".")[0] for k in keys].index("head_conv")


def test_unknown_model_options_are_refused_rather_than_exported_wrongly():
    config = model_config()
    config.shortcut_type = "A"
    with pytest.raises(WeightConversionError, match=r"does not implement model\.shortcut_type.*--backbone_only"):
        unet_keys.torch_unet_code(config, unet_config(), in_channels=1, num_classes=2, path="x.pth")

"""Numeric parity of exported weights with MONAI's PyTorch 3D ResNets, both directions.

Every test compares eval-mode outputs of the Flax model (NDHWC) and the MONAI
model (NCDHW) on the same random volume, with random BatchNorm scales, biases
and running statistics so that a wrong mapping of any tensor shows.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tests.fakes import random_variables  # noqa: E402
from vdt_jax.models.resnet3d import resnet3d  # noqa: E402
from vdt_jax.weights import files, load, monai_code  # noqa: E402
from vdt_jax.weights.keys import WeightConversionError  # noqa: E402

TOLERANCE = 1e-4  # max |torch - flax| / max |flax|


def randomise_monai(net, seed: int = 0):
    """Random BatchNorm affine parameters and running statistics, random classifier bias."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.4 * torch.rand(module.bias.shape, generator=generator) - 0.2)
                module.running_mean.copy_(0.4 * torch.rand(module.running_mean.shape, generator=generator) - 0.2)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(module.running_var.shape, generator=generator))
        if net.fc is not None:
            net.fc.bias.copy_(0.4 * torch.rand(net.fc.bias.shape, generator=generator) - 0.2)
    return net.eval()


def monai_resnet(depth: int, depth_stride: bool, **kwargs):
    """MONAI's ResNet of this depth with vdt-jax's strides (patched after construction without depth stride)."""
    net = getattr(monai_nets, f"resnet{depth}")(
        spatial_dims=3,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2 if depth_stride else (1, 2, 2),
        **{"bias_downsample": False, **kwargs},
    )
    if not depth_stride:
        net.maxpool.stride = (1, 2, 2)
        strided_conv = "conv2" if depth >= 50 else "conv1"
        for layer in (net.layer2, net.layer3, net.layer4):
            getattr(layer[0], strided_conv).stride = (1, 2, 2)
            layer[0].downsample[0].stride = (1, 2, 2)
    return net.eval()


def torch_outputs(net, volume_ndhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(volume_ndhwc.transpose(0, 4, 1, 2, 3).copy())).numpy()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def volume(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, np.float32)


def assert_parity(flax_out, torch_out, label: str) -> None:
    error = relative_error(torch_out, np.asarray(flax_out))
    scale = float(np.max(np.abs(flax_out)))
    print(f"{label}: max relative error {error:.2e} (max abs difference {error * scale:.2e}, max |output| {scale:.3g})")
    assert torch_out.shape == np.shape(flax_out)
    assert error < TOLERANCE, f"{label}: relative error {error:.2e}"


# ---------------------------------------------------------------- Flax -> MONAI


@pytest.mark.parametrize(
    "depth, depth_stride, shape, extension",
    [
        (18, True, (1, 16, 32, 32, 1), ".pth"),  # the LIDC / MONAI-default striding
        (18, False, (1, 3, 32, 32, 1), ".pth"),  # the VDT pre-training network
        (50, True, (1, 16, 32, 32, 1), ".safetensors"),  # bottleneck blocks
    ],
)
def test_exported_weights_reproduce_flax_logits_in_monai(tmp_path, depth, depth_stride, shape, extension):
    model = resnet3d(depth, num_classes=5, depth_stride=depth_stride)
    variables = random_variables(model, shape, seed=depth)
    path = tmp_path / f"r3d{depth}{extension}"
    files.export_torch_weights(variables, path, keys="monai")
    if extension == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net = monai_resnet(depth, depth_stride, num_classes=5)
    net.load_state_dict(state, strict=True)
    x = volume(shape)
    label = f"resnet{depth} depth_stride={depth_stride}"
    assert_parity(model.apply(variables, x, train=False), torch_outputs(net, x), label)


def test_monai_default_shortcut_bias_loads_with_downsample_bias(tmp_path):
    model = resnet3d(18, num_classes=3, depth_stride=True)
    x = volume((1, 16, 32, 32, 1), seed=1)
    variables = random_variables(model, x.shape, seed=1)
    files.export_torch_weights(variables, tmp_path / "w.pth", downsample_bias=True)
    net = monai_nets.resnet18(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, num_classes=3)
    net.load_state_dict(torch.load(tmp_path / "w.pth", weights_only=True), strict=True)
    assert_parity(model.apply(variables, x, train=False), torch_outputs(net.eval(), x), "resnet18 bias_downsample=True")


@pytest.mark.parametrize("depth_stride, keys, backbone_only", [(False, "plain", False), (True, "mmcls", True)])
def test_printed_monai_code_builds_the_matching_model(tmp_path, depth_stride, keys, backbone_only):
    """The snippet `python -m vdt_jax.export` prints (and the README shows) loads strictly and matches."""
    model = resnet3d(18, num_classes=4, depth_stride=depth_stride)
    x = volume((1, 8, 32, 32, 1), seed=2)
    variables = random_variables(model, x.shape, seed=2)
    path = str(tmp_path / "w.pth")
    files.export_torch_weights(variables, path, keys=keys, backbone_only=backbone_only)
    code = monai_code.monai_code(18, num_classes=None if backbone_only else 4, depth_stride=depth_stride, keys=keys, path=path)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own generated code)
    if backbone_only:  # MONAI without fc returns the pooled layer4 features
        backbone = {"params": {k: v for k, v in variables["params"].items() if k != "fc"}}
        backbone["batch_stats"] = variables["batch_stats"]
        features = resnet3d(18, num_classes=None, depth_stride=depth_stride).apply(backbone, x)
        expected = jnp.mean(features["layer4"], axis=(1, 2, 3))
    else:
        expected = model.apply(variables, x, train=False)
    assert_parity(expected, torch_outputs(namespace["model"], x), f"printed MONAI code, {keys} keys")


# ---------------------------------------------------------------- MONAI -> Flax


@pytest.mark.parametrize("depth_stride, bias_downsample", [(True, False), (False, True)])
def test_monai_weights_load_into_flax(tmp_path, depth_stride, bias_downsample):
    torch.manual_seed(0)
    net = randomise_monai(monai_resnet(18, depth_stride, num_classes=6, bias_downsample=bias_downsample))
    if bias_downsample:  # a zero shortcut bias is representable, and tolerated
        for layer in (net.layer2, net.layer3, net.layer4):
            torch.nn.init.zeros_(layer[0].downsample[0].bias)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "monai.pth")
    model = resnet3d(18, num_classes=6, depth_stride=depth_stride)
    x = volume((1, 8, 32, 32, 1), seed=3)
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(x.shape))
    variables, report = load.load_torch_weights(tmp_path / "monai.pth", template)
    assert len(report.loaded) == 102 and not report.new and not report.adapted
    assert ("layer2.0.downsample.0.bias" in report.unused) == bias_downsample
    label = f"MONAI -> Flax depth_stride={depth_stride}"
    assert_parity(model.apply(variables, x, train=False), torch_outputs(net, x), label)


def test_fresh_monai_default_model_is_rejected_for_its_shortcut_bias():
    """MONAI's default bias_downsample=True initialises that bias randomly: no vdt-jax model computes it."""
    net = monai_nets.resnet18(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, num_classes=2)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    model = resnet3d(18, num_classes=2, depth_stride=True)
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 32, 32, 1)))
    expected = r"not all zeros: layer2\.0\.downsample\.0\.bias, layer3\.0.*bias_downsample=False"
    with pytest.raises(WeightConversionError, match=expected):
        load.from_torch_state_dict(state, template)


# ------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A workdir written by the real training loop: a tiny VDT ResNet-10, 2 steps, 4 classes."""
    from tests.fakes import ArrayTask, tiny_config
    from vdt_jax.train import loop

    config = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
    config.model.widths = (16, 32, 64, 128)  # MONAI's widen_factor=0.25
    workdir = tmp_path_factory.mktemp("pretrain")
    loop.train_and_evaluate(config, str(workdir), ArrayTask(config))
    return workdir


@pytest.mark.slow
def test_cli_exports_a_checkpoint_that_monai_reproduces(trained_workdir, tmp_path):
    import subprocess
    import sys

    from vdt_jax import checkpointing
    from vdt_jax.models.factory import build_model

    out = tmp_path / "r3d10.pth"
    completed = subprocess.run(
        [sys.executable, "-m", "vdt_jax.export", f"--workdir={trained_workdir}", f"--out={out}"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    printed = completed.stdout
    assert f"wrote {out} (ResNet with classifier, checkpoint step 2): 74 tensors" in printed
    assert "classifier kept (4 classes)" in printed and f"model card: {out}.json" in printed
    code = printed.split("Matching MONAI model:\n", 1)[1]
    assert "resnet10(" in code and "widen_factor=0.25" in code and "model.maxpool.stride = (1, 2, 2)" in code
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (the code the CLI printed)
    variables, config = checkpointing.load_variables(str(trained_workdir))
    x = volume((2, 3, 16, 16, 1), seed=4)
    flax_logits = build_model(config.model, num_classes=4).apply(variables, x, train=False)
    assert_parity(flax_logits, torch_outputs(namespace["model"], x), "CLI export of a trained checkpoint")


def test_export_backbone_as_safetensors(trained_workdir, tmp_path):
    from safetensors.numpy import load_file

    from vdt_jax import export

    result = export.export(str(trained_workdir), str(tmp_path / "b.safetensors"), keys="mmcls", backbone_only=True)
    state = load_file(tmp_path / "b.safetensors")
    assert result.num_tensors == len(state) == 72 and not any(k.startswith("head.") for k in state)
    assert all(k.startswith("backbone.") for k in state)
    assert result.num_classes is None and result.classifier_note == "dropped (--backbone_only)"
    assert "feed_forward=False" in result.code and "removeprefix('backbone.')" in result.code


# ------------------------------------------------------------ segmentation UNets


def unet_model_config(**fields):
    import configs.default

    config = configs.default.model_config()
    config.update({"stem_stride": False, "depth_stride": True, "conv_impl": "conv3d", "widths": (16, 32, 64, 128), **fields})
    return config


@pytest.mark.parametrize("depth, keys", [(10, "monai"), (18, "mmcls")])
def test_unet_encoder_export_loads_strictly_into_monai_and_matches_the_last_feature_map(tmp_path, depth, keys):
    from vdt_jax.models.factory import build_model
    from configs import finetune_default
    from vdt_jax.models.unet3d import build_unet
    from vdt_jax.weights import unet_keys

    config = unet_model_config(depth=depth)
    x = volume((1, 16, 32, 32, 1), seed=5)
    decoder = finetune_default.get_config("segmentation").unet
    variables = random_variables(build_unet(config, decoder, num_classes=3), x.shape, seed=depth)
    encoder = unet_keys.encoder_variables(variables)
    path = str(tmp_path / "encoder.pth")
    files.export_torch_weights(encoder, path, keys=keys)
    code = monai_code.monai_code_for(config, num_classes=None, in_channels=1, keys=keys, path=path)
    assert "feed_forward=False" in code and "conv1_t_stride=1" in code
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own generated code, as the exporter prints it)
    net, captured = namespace["model"], {}
    net.layer4.register_forward_hook(lambda module, inputs, output: captured.setdefault("layer4", output))
    pooled = torch_outputs(net, x)
    features = build_model(config, num_classes=None).apply(encoder, x)["layer4"]
    last_map = captured["layer4"].detach().numpy().transpose(0, 2, 3, 4, 1)
    assert_parity(features, last_map, f"UNet encoder (ResNet-{depth}, {keys} keys) layer4 feature map")
    assert_parity(jnp.mean(features, axis=(1, 2, 3)), pooled, f"UNet encoder (ResNet-{depth}) pooled features")


def test_exporting_a_trained_unet_run(segmentation_run, tmp_path):
    """The whole UNet (TorchUNet3D, the code in its model card) and its encoder (MONAI), from a real workdir."""
    import json

    from vdt_jax import checkpointing, export
    from vdt_jax.models.unet3d import build_unet

    workdir = segmentation_run[0]
    full = export.export(workdir, str(tmp_path / "unet.pth"))
    card = json.load(open(tmp_path / "unet.pth.json"))
    assert full.contents == "whole UNet" and full.step == 6 and full.num_classes == 3
    assert card["weights"]["tensors"] == full.num_tensors and card["source"]["evaluation"]["step"] == 6
    assert card["class_names"] == ["background", "organ", "lesion"] and card["preprocessing"]["normalize"] == "window"
    namespace: dict = {}
    exec(card["pytorch"]["code"], namespace)  # noqa: S102 (the code the model card holds)
    variables, config = checkpointing.load_variables(workdir)
    x = volume((1, 10, 12, 12, 1), seed=6)
    logits = build_unet(config.model, config.unet, num_classes=3).apply(variables, x, train=False)
    actual = torch_outputs(namespace["model"], x).transpose(0, 2, 3, 4, 1)
    assert_parity(logits, actual, "CLI-path export of a trained UNet, logits")
    backbone = export.export(workdir, str(tmp_path / "encoder.safetensors"), backbone_only=True, keys="mmcls")
    card = json.load(open(tmp_path / "encoder.safetensors.json"))
    assert backbone.num_classes is None and card["architecture"]["num_classes"] is None
    assert card["weights"]["key_style"] == "mmcls" and card["architecture"]["network"] == "ResNet3D (UNet encoder (ResNet keys))"
    assert card["pytorch"]["code"] == "(none: MONAI's widen_factor cannot express widths (8, 8, 16, 16))\n"  # the test's narrow widths


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keys": "mmcls"}, r"--keys=mmcls names a ResNet key style; a whole UNet is written with its own keys"),
        ({"downsample_bias": True}, r"--downsample_bias .* TorchUNet3D, whose shortcut convs have none"),
        ({"out": "unet.onnx"}, r"unet.onnx: use a .safetensors file or one of"),
        ({"step": 3}, r"--step=3: no such checkpoint .* available steps: \[4, 6\]"),
    ],
)
def test_exports_that_cannot_be_honoured_fail_before_writing(segmentation_run, tmp_path, kwargs, message):
    from vdt_jax import export
    from vdt_jax.errors import UserError

    out = str(tmp_path / kwargs.pop("out", "unet.pth"))
    with pytest.raises(UserError, match=message):
        export.export(segmentation_run[0], out, **kwargs)
    assert os.listdir(tmp_path) == []

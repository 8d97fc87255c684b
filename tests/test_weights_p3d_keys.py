"""Tests of vdt_jax.weights.p3d_keys: P3D / MP3D weights in the reference's layout, both ways, through vdt_jax.weights.

The PyTorch side is tests/p3d_torch_reference.py, whose state-dict keys are the
reference backbone's. Full-size models are only shape-evaluated
(jax.eval_shape); numeric parity runs narrow networks on small volumes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.finetune_default
from tests import fakes
from vdt_jax.errors import UserError
from vdt_jax.models.group_transform import GroupTransformBackbone
from vdt_jax.models.p3d import p3d
from vdt_jax.models.resnet3d import resnet3d
from vdt_jax.weights import files, keys, load, p3d_keys, pretrained

torch = pytest.importorskip("torch")
from tests.p3d_torch_reference import P3DReference  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # max |torch - flax| / max |flax|, per stage
TORCH_CONVERSION = {"groupconv": "groupconv", "depthconv": "conv3d", "centre": "center_crop"}


def flax_backbone(arch: str, variant: str, conversion: str, **kwargs) -> GroupTransformBackbone:
    return GroupTransformBackbone(p3d(arch, variant, num_classes=None, **kwargs), conversion=conversion)


def torch_backbone(arch: str, variant: str, conversion: str, **kwargs) -> P3DReference:
    return P3DReference(variant, modified=arch == "mp3d", conversion=TORCH_CONVERSION[conversion], **kwargs)


def shapes_of(model, input_shape=(1, 9, 32, 32, 1)):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))


def numpy_state(net) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in net.state_dict().items()}


# ------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "arch, variant, conversion",
    [("mp3d", "63", "groupconv"), ("mp3d", "63", "depthconv"), ("p3d", "63", "centre"), ("mp3d", "18ba", "centre")],
)
def test_keys_order_and_shapes_are_the_reference_backbones(arch, variant, conversion):
    shapes = shapes_of(flax_backbone(arch, variant, conversion, norm="group"), (1, 9, 64, 64, 1))
    reference = torch_backbone(arch, variant, conversion).state_dict()
    entries = p3d_keys.variable_entries(shapes)
    assert [entry.key for entry in entries] == list(reference)  # same names, same order
    for entry in entries:
        assert keys.torch_shape(entry.leaf.shape) == tuple(reference[entry.key].shape), entry.key


def test_batchnorm_state_dict_and_key_styles():
    model = flax_backbone("mp3d", "18ba", "groupconv", norm="batch")
    variables = fakes.random_variables(model, (1, 9, 32, 32, 1))
    state = p3d_keys.to_torch_state_dict(variables)
    assert list(state) == list(torch_backbone("mp3d", "18ba", "groupconv", norm="batch").state_dict())
    assert state["layer2.0.norm_3.num_batches_tracked"].dtype == np.int64
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 1, 1)  # block 2, pattern C: reads conv1's output
    assert state["layer3.0.conv2.weight"].shape == (256, 128, 3, 1, 1)  # block 4, pattern B: reads the block input
    kernel = variables["params"]["groupconv_3"]["kernel"]  # (1, 1, 9, 256)
    assert state["groupconv_3.weight"].shape == (256, 9, 1, 1)
    assert state["groupconv_3.weight"][200, 4, 0, 0] == kernel[0, 0, 4, 200]
    classifier = fakes.random_variables(p3d("mp3d", "18ba", num_classes=5, widths=(8, 8, 8, 8)), (1, 3, 16, 16, 1))
    mmcls = p3d_keys.to_torch_state_dict(classifier, keys="mmcls")
    assert list(mmcls)[0] == "backbone.conv1_custom.weight" and list(mmcls)[-2:] == ["head.fc.weight", "head.fc.bias"]
    assert "fc.weight" not in p3d_keys.to_torch_state_dict(classifier, backbone_only=True)
    back, report = load.from_torch_state_dict(mmcls, classifier)  # mmcls style in: backbone.* and head.fc.*
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, classifier))
    assert {"fc.weight", "fc.bias", "conv1_custom.weight"} <= set(report.loaded) and not report.new
    for style in ("monai", "medicalnet"):
        with pytest.raises(UserError, match=f"key style '{style}' cannot express a P3D / MP3D network"):
            p3d_keys.to_torch_state_dict(classifier, keys=style)


# ------------------------------------------------------------------------ parity


def randomise_torch_norms(net, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm3d, torch.nn.GroupNorm)):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.4 * torch.rand(module.bias.shape, generator=generator) - 0.2)
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.copy_(0.4 * torch.rand(module.running_mean.shape, generator=generator) - 0.2)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(module.running_var.shape, generator=generator))


def torch_stage_outputs(net, x_ndhwc: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        outs = net.eval()(torch.from_numpy(x_ndhwc.transpose(0, 4, 1, 2, 3).copy()))
    return [o.numpy().transpose(0, 2, 3, 1) for o in outs]


def assert_stage_parity(flax_out: dict, torch_out: list, label: str) -> None:
    for stage, expected in enumerate(torch_out, start=1):
        actual = np.asarray(flax_out[f"layer{stage}"])
        assert actual.shape == expected.shape, (label, stage)
        error = float(np.max(np.abs(actual - expected)) / np.max(np.abs(actual)))
        print(f"{label} layer{stage} {actual.shape}: max relative error {error:.2e}")
        assert error < TOLERANCE, f"{label} layer{stage}: relative error {error:.2e}"


PARITY_CASES = [
    ("mp3d", "63", "groupconv", "batch", (8, 8, 16, 16)),
    ("mp3d", "18ba", "depthconv", "group", (32, 32, 32, 32)),
    # GroupNorm(32) on 32 channels normalises single channels over few voxels, where a deep random network
    # amplifies float32 rounding (PyTorch float32 itself is 1.5e-4 from float64 at layer4 with widths 32);
    # widths 64-128 keep 2-16 channels per group, like the full network's groups of 2-64 channels.
    ("mp3d", "63", "centre", "group", (64, 64, 128, 128)),
    ("p3d", "63", "centre", "batch", (8, 8, 16, 16)),
    ("p3d", "18ba", "centre", "batch", (8, 16, 16, 32)),
]


@pytest.mark.parametrize("arch, variant, conversion, norm, widths", PARITY_CASES)
def test_flax_stage_outputs_match_the_torch_reference_both_ways(arch, variant, conversion, norm, widths):
    shape = (2, 9, 32, 32, 1)
    x = np.random.default_rng(1).standard_normal(shape, np.float32)
    label = f"{arch}-{variant} {conversion} {norm}"
    model = flax_backbone(arch, variant, conversion, norm=norm, widths=widths)
    variables = fakes.random_variables(model, shape, seed=3)
    # Flax -> PyTorch: the exported state dict loads strictly and computes the same stage maps.
    net = torch_backbone(arch, variant, conversion, norm=norm, widths=widths)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in p3d_keys.to_torch_state_dict(variables).items()})
    assert_stage_parity(model.apply(variables, x), torch_stage_outputs(net, x), "export " + label)
    # PyTorch -> Flax through the one importer: a randomised reference module computes the same.
    torch.manual_seed(4)
    net = torch_backbone(arch, variant, conversion, norm=norm, widths=widths)
    randomise_torch_norms(net, seed=5)
    imported, report = load.from_torch_state_dict(numpy_state(net), shapes_of(model, shape))
    assert len(report.loaded) == len(jax.tree_util.tree_leaves(variables)) and not (report.adapted or report.new)
    assert_stage_parity(model.apply(imported, x), torch_stage_outputs(net, x), "import " + label)


def test_round_trip_is_exact_and_import_names_every_problem():
    model = flax_backbone("mp3d", "18ba", "groupconv", norm="batch", widths=(8, 8, 8, 8))
    variables = fakes.random_variables(model, (1, 9, 16, 16, 1))
    state = p3d_keys.to_torch_state_dict(variables, keys="mmcls")
    back, _ = load.from_torch_state_dict(state, variables)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, variables))
    broken = {k: v for k, v in state.items() if k != "backbone.layer3.1.conv4.weight"}
    broken["backbone.layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
    broken["backbone.groupconv_2.weight"] = np.zeros((8, 3, 1, 1), np.float32)
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(broken, variables)
    message = str(error.value)
    assert "1 missing from the file:\n  layer3.1.conv4.weight (8, 8, 3, 1, 1)" in message
    assert "1 unexpected in the file:\n  layer5.0.conv1.weight (1,)" in message
    assert "groupconv_2.weight: file (8, 3, 1, 1), model (8, 9, 1, 1)" in message


def test_resnet_and_p3d_files_into_each_other_name_both_networks():
    resnet_state = keys.to_torch_state_dict(fakes.random_variables(resnet3d(18, num_classes=2), (1, 3, 32, 32, 1)))
    p3d_template = shapes_of(p3d("mp3d", "63", num_classes=2), (1, 3, 32, 32, 1))
    with pytest.raises(keys.WeightConversionError) as error:
        load.from_torch_state_dict(resnet_state, p3d_template)
    assert "holds a ResNet-18 (basic blocks (2, 2, 2, 2)), the model is a P3D / MP3D (blocks (3, 4, 6, 3), " \
        'p3d_variant 63 or 34ba). Set model.arch="resnet3d"' in str(error.value)  # fmt: skip
    p3d_state = p3d_keys.to_torch_state_dict(fakes.random_variables(p3d("p3d", "18ba", widths=(8,) * 4), (1, 9, 16, 16, 1)))
    with pytest.raises(keys.WeightConversionError, match=r'P3D / MP3D \(blocks \(2, 2, 2, 2\).*Set model.arch="mp3d"'):
        load.from_torch_state_dict(p3d_state, shapes_of(resnet3d(18, num_classes=1000), (1, 3, 32, 32, 1)))


# ------------------------------------------------------------- files users have


def write_detector_checkpoint(net, path, wrap: str = "") -> None:
    """The reference's release layout: an mmdet checkpoint, the backbone under `backbone.`, neck and heads beside it."""
    state = {f"{wrap}backbone.{k}": v for k, v in net.state_dict().items()}
    state[f"{wrap}neck.lateral_convs.0.conv.weight"] = torch.ones(4, 32, 1, 1)
    state[f"{wrap}rpn_head.rpn_conv.weight"] = torch.ones(4, 4, 3, 3)
    state[f"{wrap}roi_head.bbox_head.fc_cls.weight"] = torch.ones(2, 16)
    torch.save({"meta": {"epoch": 12, "mmdet_version": "2.28", "CLASSES": ["lesion"]}, "state_dict": state}, path)


@pytest.mark.parametrize("wrap", ["", "module."])
def test_reference_detector_checkpoint_gives_its_backbone(tmp_path, wrap):
    widths, x = (8, 8, 8, 8), np.random.default_rng(2).standard_normal((1, 9, 32, 32, 1), np.float32)
    torch.manual_seed(6)
    net = torch_backbone("mp3d", "63", "groupconv", norm="batch", widths=widths)
    randomise_torch_norms(net, seed=7)
    path = tmp_path / "mp3d63_deeplesion.pth"
    write_detector_checkpoint(net, path, wrap)
    # Into the detection backbone with its GTM: every backbone tensor, the detector's own outputs.
    model = flax_backbone("mp3d", "63", "groupconv", norm="batch", widths=widths)
    variables, report = load.load_torch_weights(path, shapes_of(model))
    assert_stage_parity(model.apply(variables, x), torch_stage_outputs(net, x), f"{wrap}backbone.* release")
    outside = {k: v for k, v in report.unused.items() if not k.endswith("num_batches_tracked")}
    assert outside == {
        f"{wrap}{name}": "outside the backbone (the neck or heads of a detector or segmenter)"
        for name in ("neck.lateral_convs.0.conv.weight", "rpn_head.rpn_conv.weight", "roi_head.bbox_head.fc_cls.weight")
    }
    # Into a fine-tuning classifier: the GTM and the heads unused, a new classifier, every report line said.
    classifier = p3d("mp3d", "63", num_classes=2, widths=widths, norm="batch")
    template = classifier.init(jax.random.key(0), jnp.zeros((1, 3, 16, 16, 1)))
    loaded, report = pretrained.initial_variables(str(path), template)
    assert len(report.loaded) == len(jax.tree_util.tree_leaves(template)) - 2  # all but the classifier
    assert report.new == {"fc": "the source has no classifier"}
    assert report.unused["groupconv_4.weight"] == "the group transform module of a detection backbone; the model has none"
    summary = report.summary()
    assert "unused groupconv_1.weight, groupconv_2.weight, groupconv_3.weight, ... (4 in all)" in summary
    assert f"unused {wrap}neck.lateral_convs.0.conv.weight" in summary
    np.testing.assert_array_equal(loaded["params"]["layer3_5"]["conv3"]["kernel"][:, 0, 0, 2, 1],
                                  net.state_dict()["layer3.5.conv3.weight"][1, 2, :, 0, 0].numpy())  # fmt: skip


def test_unet_encoder_and_frozen_stem_of_a_p3d(tmp_path):
    from tests.test_p3d import p3d_finetune_model_config
    from vdt_jax.models.unet3d import build_unet

    source = p3d("mp3d", "18ba", num_classes=None, widths=(8, 8, 16, 16))
    state = p3d_keys.to_torch_state_dict(fakes.random_variables(source, (1, 3, 16, 16, 1), seed=9))
    unet_config = configs.finetune_default.get_config("segmentation").unet
    unet = build_unet(p3d_finetune_model_config("segmentation"), unet_config, num_classes=3)
    template = unet.init(jax.random.key(0), jnp.zeros((1, 8, 16, 16, 1)))
    files.write_state_dict(state, tmp_path / "p3d.safetensors")
    loaded, report = pretrained.initial_variables(str(tmp_path / "p3d.safetensors"), template)
    assert report.target == "encoder" and len(report.loaded) == len(state) - len(report.unused)
    np.testing.assert_array_equal(loaded["params"]["encoder"]["norm1"]["scale"], state["norm1.weight"])
    mask = pretrained.trainable_mask(loaded["params"], ("stem",), ("encoder",))
    assert not mask["encoder"]["conv1_custom"]["kernel"] and not mask["encoder"]["norm1"]["scale"]
    assert mask["encoder"]["layer1_0"]["conv1"]["kernel"] and mask["up1"]["conv1"]["kernel"]



def test_export_plans_pseudo_3d_runs_with_the_reference_keys():
    from configs import default
    from vdt_jax import export

    config = default.get_config()
    config.model.arch, config.model.widths = "mp3d", (8, 8, 8, 8)
    variables = fakes.random_variables(p3d("mp3d", "63", num_classes=4, widths=(8,) * 4), (1, 3, 16, 16, 1))

    def plan(keys="mmcls", **options):
        return export.plan_export(
            variables, config, keys=keys, out="mp3d.safetensors", **{"backbone_only": False, "downsample_bias": False, **options}
        )

    result = plan()
    assert set(result.state) == set(p3d_keys.to_torch_state_dict(variables, keys="mmcls"))
    assert {"backbone.conv1_custom.weight", "backbone.layer4.2.conv4.weight", "head.fc.bias"} <= set(result.state)
    assert result.num_classes == 4 and "MONAI has no pseudo-3D network" in result.code
    assert "fc" not in str(plan(keys="mp3d", backbone_only=True).state.keys()) and plan(backbone_only=True).num_classes is None
    with pytest.raises(UserError, match="--downsample_bias is for MONAI's ResNet"):
        plan(keys="mp3d", downsample_bias=True)
    with pytest.raises(UserError, match="key style 'monai' cannot express a P3D / MP3D network"):
        plan(keys="monai")
    config.model.arch = "resnet3d"  # a ResNet run cannot be written with the P3D reference's keys
    with pytest.raises(UserError, match=r"--keys=mp3d is for P3D / MP3D networks; .* holds a 3D ResNet"):
        plan(keys="mp3d")


# ------------------------------------------------------------ the command lines


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def prepare_miniature_imagenet(root) -> str:
    """The tests' miniature ImageNet (8 classes x 4 images, 8 validation images) prepared by TFDS's own builder."""
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow", reason="preparing imagenet2012 needs TensorFlow (pip install -e .[prepare])")
    from vdt_jax.data import fake_imagenet

    fake_imagenet.write_fake_imagenet(root / "manual", num_classes=8, images_per_class=4, num_val=8, seed=0)
    manual = tfds.download.DownloadConfig(manual_dir=str(root / "manual"), try_download_gcs=False)
    tfds.builder("imagenet2012", data_dir=str(root / "tfds")).download_and_prepare(
        file_format="array_record", download_config=manual
    )
    return str(root / "tfds")


@pytest.mark.slow
def test_imagenet_p3d63_recipe_pretrains_and_its_export_loads_into_the_reference(tmp_path):
    from vdt_jax import checkpointing
    from vdt_jax.models.factory import build_model

    data_dir, workdir, out = prepare_miniature_imagenet(tmp_path), tmp_path / "run", tmp_path / "mp3d63.pth"
    trained = run_module(
        "vdt_jax.pretrain", "--config=configs/imagenet_p3d63.py", f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}", "--config.data.image_size=32", "--config.data.eval_resize=36",
        "--config.data.num_workers=0", "--config.model.widths=(8,8,8,8)", "--config.batch_size=8",
        "--config.model.bn_group_size=4",
        "--config.eval_batch_size=8", "--config.num_train_steps=2", "--config.checkpoint_every_steps=2",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "step       2/2" in trained.stdout and "Validation top-1" in trained.stdout
    exported = run_module("vdt_jax.export", f"--workdir={workdir}", f"--out={out}", "--keys=mp3d", "--backbone_only")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "MONAI has no pseudo-3D network" in exported.stdout and "classifier dropped" in exported.stdout
    # The file loads strictly into the reference backbone, which computes what the checkpoint computes.
    net = P3DReference("63", modified=True, conversion="center_crop", norm="batch", widths=(8, 8, 8, 8))
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    variables, config = checkpointing.load_variables(str(workdir))
    model = GroupTransformBackbone(build_model(config.model, num_classes=None), conversion="centre")
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32, 1), np.float32)  # a VDT volume: 3 slices
    wrapped = {c: {"backbone": {k: v for k, v in tree.items() if k != "fc"}} for c, tree in variables.items()}
    assert_stage_parity(model.apply(wrapped, x), torch_stage_outputs(net, x), "imagenet_p3d63 CLI export")
    refused = run_module("vdt_jax.export", f"--workdir={workdir}", f"--out={tmp_path / 'm.pth'}", "--keys=monai")
    assert refused.returncode != 0 and "key style 'monai' cannot express a P3D / MP3D network" in refused.stderr

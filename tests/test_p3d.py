"""Tests of vdt_jax.models.p3d: golden counts, block patterns, VDT volumes, the factory, fine-tuning uses.

Keys and numeric parity against the PyTorch reference are in tests/test_weights_p3d_keys.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import configs.default
import configs.finetune_default
from tests import fakes
from vdt_jax.errors import UserError
from vdt_jax.models import factory
from vdt_jax.models.group_transform import GroupTransformBackbone
from vdt_jax.models.p3d import P3DBasicBlock, P3DBottleneck, p3d
from vdt_jax.models.unet3d import build_unet

UNET_CONFIG = configs.finetune_default.get_config("segmentation").unet


def count(tree) -> tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(int(np.prod(leaf.shape)) for leaf in leaves), len(leaves)


@pytest.mark.parametrize(
    "arch, variant, conversion, parameters, tensors",
    [  # the reference definitions' figures (REFERENCE.md), GroupNorm as in its DeepLesion configs
        ("mp3d", "63", "groupconv", 27_316_288, 211),
        ("mp3d", "63", "centre", 27_281_728, 207),
        ("p3d", "63", "centre", 27_281_728, 207),
        ("mp3d", "18ba", "centre", 15_257_536, 108),
        ("p3d", "18ba", "centre", 15_257_536, 108),
    ],
)
def test_golden_parameter_counts(arch, variant, conversion, parameters, tensors):
    model = GroupTransformBackbone(p3d(arch, variant, num_classes=None, norm="group"), conversion=conversion)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 9, 64, 64, 1)))
    assert count(shapes["params"]) == (parameters, tensors)


def block_patterns(model: nn.Module, input_shape) -> list[tuple[str, str]]:
    """(block name, pattern) of every P3D block, in call order."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, (P3DBottleneck, P3DBasicBlock)) and context.method_name == "__call__":
            seen.append((context.module.name, context.module.pattern))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))
    return seen


@pytest.mark.parametrize(
    "variant, expected",
    [("63", ["ABC", "ABCA", "BCABCA", "BCA"]), ("18ba", ["AB", "CA", "BC", "AB"])],
)
def test_patterns_cycle_over_the_whole_network(variant, expected):
    seen = block_patterns(p3d("mp3d", variant, num_classes=None, widths=(8, 8, 8, 8)), (1, 3, 16, 16, 1))
    names = [f"layer{stage}_{i}" for stage, patterns in enumerate(expected, 1) for i in range(len(patterns))]
    assert seen == list(zip(names, "".join(expected)))


@pytest.mark.parametrize("variant", ["63", "18ba"])
def test_mp3d_classifies_vdt_volumes_and_keeps_depth_three(variant):
    model = p3d("mp3d", variant, num_classes=7, widths=(8, 8, 8, 8))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 32, 32, 1), np.float32))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x)
    assert logits.shape == (4, 7) and logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    features = model.clone(num_classes=None).apply(variables, x)
    assert [f.shape[1] for f in features.values()] == [3] * 5  # stem and every stage keep the 3 slices
    scales = variables["params"]["layer1_0"]["norm_4"]["scale"]
    # Bottlenecks start as identity (zero last-norm scale); basic blocks cannot (ReLU after norm_4).
    assert float(jnp.abs(scales).max()) == (0.0 if variant == "63" else 1.0)


def test_plain_p3d_needs_nine_slices():
    with pytest.raises(UserError, match="needs at least 9 slices; the input has 3"):
        jax.eval_shape(p3d("p3d", "63").init, jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))


@pytest.mark.slow
def test_vdt_pretraining_loop_trains_mp3d(tmp_path):
    from vdt_jax.train import loop

    overrides = {"model.arch": "mp3d", "model.p3d_variant": "63", "model.conv_impl": "conv3d"}
    config = fakes.tiny_config(**overrides, num_train_steps=2, checkpoint_every_steps=2)
    task = fakes.ArrayTask(config)
    metrics = loop.train_and_evaluate(config, str(tmp_path), task)
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["top1"] <= 1.0
    params = task.build_model().init(jax.random.key(0), task.example_inputs())["params"]
    assert "conv1_custom" in params and "layer4_2" in params  # the P3D-63 layout


def test_factory_builds_pseudo_3d_nets_and_refuses_resnet_only_options():
    config = configs.default.get_config()
    config.model.arch, config.model.p3d_variant = "p3d", "18ba"
    model = factory.build_model(config.model, num_classes=None)
    assert model.depth_pooling and model.stage_sizes == (2, 2, 2, 2) and model.block_cls is P3DBasicBlock
    assert model.widths == (16, 32, 64, 128) and model.conv_impl == "auto" and model.stem_stride
    for field, value, why in (
        ("depth_stride", True, "never stride depth"),
        ("shortcut_type", "A", r"1x1x1 conv \+ norm"),
        ("force_downsample", True, "reference ResNet release"),
        ("stage_strides", (1, 1, 2, 2), "in-plane by 2 from stage 2"),
    ):
        broken = config.model.copy_and_resolve_references()
        broken[field] = value
        with pytest.raises(UserError, match=rf"config.model.{field}=.* has no meaning for arch 'p3d' \(.*{why}"):
            factory.build_model(broken, num_classes=3)
    config.model.arch = "p4d"
    with pytest.raises(UserError, match="unknown config.model.arch 'p4d'"):
        factory.build_model(config.model, num_classes=3)
    config.model.arch, config.model.p3d_variant = "mp3d", "62"
    with pytest.raises(UserError, match=r"unknown P3D variant '62' \(model.p3d_variant\)"):
        factory.build_model(config.model, num_classes=3)



def test_pseudo_3d_nets_take_the_resnet_batchnorm_and_head_options():
    """Frozen stages keep their BatchNorm statistics, bn_group_size groups them, head_init_std sets the classifier."""
    config = configs.default.get_config().model
    config.update(arch="mp3d", p3d_variant="18ba", widths=(32, 32, 32, 32), conv_impl="conv3d", head_init_std=0.01)
    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, (4, 3, 16, 16, 1)), jnp.float32)
    plain = factory.build_model(config, num_classes=3)
    variables = plain.init(jax.random.key(0), x)
    assert float(jnp.std(variables["params"]["fc"]["kernel"])) == pytest.approx(0.01, rel=0.3)
    frozen = factory.build_model(config, num_classes=3, frozen_stages=("stem", "layer1"))
    _, updated = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = variables["batch_stats"], updated["batch_stats"]
    for name in ("norm1", "layer1_0"):
        jax.tree.map(np.testing.assert_array_equal, after[name], before[name])
    assert not np.allclose(after["layer2_0"]["norm_1"]["mean"], before["layer2_0"]["norm_1"]["mean"])
    # Groups of 2 examples: the batch of 4 in two halves gives the same outputs as each half alone.
    config.bn_group_size = 2
    grouped = factory.build_model(config, num_classes=3)
    out, _ = grouped.apply(variables, x, train=True, mutable=["batch_stats"])
    halves = [plain.apply(variables, x[i : i + 2], train=True, mutable=["batch_stats"])[0] for i in (0, 2)]
    np.testing.assert_allclose(out, np.concatenate(halves), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ fine-tuning


def p3d_finetune_model_config(task: str):
    config = configs.finetune_default.get_config(task)
    config.model.arch, config.model.p3d_variant = "mp3d", "18ba"
    config.model.depth_stride = False  # pseudo-3D nets keep depth
    config.model.widths = (8, 8, 16, 16)
    config.model.conv_impl = "conv3d"
    return config.model


def test_unet_on_an_mp3d_encoder_predicts_at_full_resolution():
    model_config = p3d_finetune_model_config("segmentation")
    assert not model_config.stem_stride  # the segmentation default: full-resolution stem skip
    unet = build_unet(model_config, UNET_CONFIG, num_classes=3)
    x = jnp.zeros((1, 8, 24, 24, 1))
    variables = jax.eval_shape(unet.init, jax.random.key(0), x)
    assert jax.eval_shape(unet.apply, variables, x).shape == (1, 8, 24, 24, 3)
    features = jax.eval_shape(unet.encoder.apply, {k: v["encoder"] for k, v in variables.items()}, x)
    assert {k: v.shape[1:4] for k, v in features.items()} == {
        "stem": (8, 24, 24), "layer1": (8, 12, 12), "layer2": (8, 6, 6), "layer3": (8, 3, 3), "layer4": (8, 2, 2),
    }  # fmt: skip
    assert variables["params"]["encoder"]["conv1_custom"]["kernel"].shape == (1, 7, 7, 1, 8)  # as pre-trained
    model_config.depth_stride = True  # the ResNet recipes' isotropic strides cannot apply
    with pytest.raises(UserError, match="depth_stride=True has no meaning for arch 'mp3d'.*set config.model.depth_stride=False"):
        build_unet(model_config, UNET_CONFIG, num_classes=3)


def test_classification_finetuning_model_is_the_pseudo_3d_classifier():
    model = factory.build_model(p3d_finetune_model_config("classification"), num_classes=2)
    x = jnp.zeros((2, 12, 12, 12, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 2)
    assert variables["params"]["fc"]["kernel"].shape == (16, 2) and "layer4_1" in variables["params"]


@pytest.mark.slow
@pytest.mark.parametrize("task, index_file", [("classification", "manifest.csv"), ("segmentation", "dataset.json")])
def test_finetuning_starts_from_a_pretrained_mp3d(task, index_file, tmp_path):
    import os

    from tests.finetune_fakes import tiny_finetune_config
    from vdt_jax.finetune import make_task, synthetic
    from vdt_jax.train import loop
    from vdt_jax.weights import files, p3d_keys

    folder = str(tmp_path / "data")
    if task == "classification":
        synthetic.write_classification_dataset(folder, num_train=8, num_val=2, shape=(20, 20, 14), seed=5)
    else:
        synthetic.write_segmentation_dataset(folder, num_train=2, num_val=1, shape=(24, 24, 10), seed=3)
    source = p3d("mp3d", "18ba", num_classes=None, widths=(8, 8, 16, 16))
    state = p3d_keys.to_torch_state_dict(fakes.random_variables(source, (1, 3, 16, 16, 1)))
    files.write_state_dict(state, tmp_path / "mp3d.safetensors")
    overrides = {"model.arch": "mp3d", "model.p3d_variant": "18ba", "model.depth_stride": False}
    config = tiny_finetune_config(
        task, os.path.join(folder, index_file), str(tmp_path / "cache"), num_train_steps=2,
        init_from=str(tmp_path / "mp3d.safetensors"), **overrides,
    )  # fmt: skip
    workdir = str(tmp_path / "run")
    metrics = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
    report = open(os.path.join(workdir, "init_report.txt")).read()
    loaded = sum(not key.endswith("num_batches_tracked") for key in state)
    assert f"loaded {loaded} tensors" in report and "layer4.1.conv4.weight" in report
    assert all(np.isfinite(value) for value in metrics.values() if isinstance(value, float))

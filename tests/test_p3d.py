"""P3D / MP3D and the group transform module: reference counts, keys, parity, patterns, shapes.

The PyTorch side is tests/p3d_torch_reference.py, whose state-dict keys are the
reference backbone's. Full-size models are only shape-evaluated
(jax.eval_shape); numeric parity runs narrow networks on small volumes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tests import fakes
from vdt_jax.data import ct_slices
from vdt_jax.models import factory
from vdt_jax.models.group_transform import GroupTransformBackbone
from vdt_jax.models.p3d import P3DBasicBlock, P3DBottleneck, p3d
from vdt_jax.weights import p3d_keys

torch = pytest.importorskip("torch")
from tests.p3d_torch_reference import P3DReference  # noqa: E402

TOLERANCE = 1e-4  # max |torch - flax| / max |flax|, per stage
TORCH_CONVERSION = {"groupconv": "groupconv", "depthconv": "conv3d", "centre": "center_crop"}


def flax_backbone(arch: str, variant: str, conversion: str, **kwargs) -> GroupTransformBackbone:
    return GroupTransformBackbone(p3d(arch, variant, num_classes=None, **kwargs), conversion=conversion)


def torch_backbone(arch: str, variant: str, conversion: str, **kwargs) -> P3DReference:
    return P3DReference(variant, modified=arch == "mp3d", conversion=TORCH_CONVERSION[conversion], **kwargs)


def count(tree) -> tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(int(np.prod(leaf.shape)) for leaf in leaves), len(leaves)


def torch_shape(flax_shape) -> tuple[int, ...]:
    return p3d_keys.to_torch_layout(np.empty(flax_shape, np.uint8)).shape


# ------------------------------------------------------------ reference definitions


@pytest.mark.parametrize(
    "arch, variant, conversion, parameters, tensors",
    [
        ("mp3d", "63", "groupconv", 27_316_288, 211),
        ("mp3d", "63", "centre", 27_281_728, 207),
        ("p3d", "63", "centre", 27_281_728, 207),
        ("mp3d", "18ba", "centre", 15_257_536, 108),
        ("p3d", "18ba", "centre", 15_257_536, 108),
    ],
)
def test_parameter_counts_and_keys_match_the_reference(arch, variant, conversion, parameters, tensors):
    model = flax_backbone(arch, variant, conversion, norm="group")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 9, 64, 64, 1)))
    assert count(shapes["params"]) == (parameters, tensors)
    reference = torch_backbone(arch, variant, conversion).state_dict()
    assert sum(v.numel() for v in reference.values()) == parameters
    mapped = p3d_keys.flax_to_torch_keys(shapes)
    assert list(mapped) == list(reference)  # same names, same order
    for key, (collection, path) in mapped.items():
        leaf = p3d_keys._get(shapes[collection], path)
        assert torch_shape(leaf.shape) == tuple(reference[key].shape), key


def test_batchnorm_state_dict_keys_include_running_statistics():
    model = flax_backbone("mp3d", "18ba", "groupconv", norm="batch")
    variables = fakes.random_variables(model, (1, 9, 32, 32, 1))
    state = p3d_keys.to_torch_state_dict(variables)
    reference = torch_backbone("mp3d", "18ba", "groupconv", norm="batch").state_dict()
    assert list(state) == list(reference)
    assert state["layer2.0.norm_3.num_batches_tracked"].dtype == np.int64
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 1, 1)  # block 2, pattern C: reads conv1's output
    assert state["layer3.0.conv2.weight"].shape == (256, 128, 3, 1, 1)  # block 4, pattern B: reads the block input
    kernel = variables["params"]["groupconv_3"]["kernel"]  # (1, 1, 9, 256)
    assert state["groupconv_3.weight"].shape == (256, 9, 1, 1)
    assert state["groupconv_3.weight"][200, 4, 0, 0] == kernel[0, 0, 4, 200]
    assert list(p3d_keys.to_torch_state_dict(variables, prefix="backbone."))[0] == "backbone.conv1_custom.weight"


# ------------------------------------------------------------------------- patterns


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


# --------------------------------------------------------------------------- parity


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
    # PyTorch -> Flax: a randomised reference module imports and computes the same.
    torch.manual_seed(4)
    net = torch_backbone(arch, variant, conversion, norm=norm, widths=widths)
    randomise_torch_norms(net, seed=5)
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    imported = p3d_keys.from_torch_state_dict(net.state_dict(), template)
    assert_stage_parity(model.apply(imported, x), torch_stage_outputs(net, x), "import " + label)


def test_state_dict_round_trip_is_exact_and_import_is_strict():
    model = flax_backbone("mp3d", "18ba", "groupconv", norm="batch", widths=(8, 8, 8, 8))
    variables = fakes.random_variables(model, (1, 9, 16, 16, 1))
    state = p3d_keys.to_torch_state_dict(variables, prefix="backbone.")
    back = p3d_keys.from_torch_state_dict(state, variables, prefix="backbone.")
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, variables))
    broken = {k: v for k, v in state.items() if k != "backbone.layer3.1.conv4.weight"}
    broken["backbone.layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
    broken["backbone.groupconv_2.weight"] = np.zeros((8, 3, 1, 1), np.float32)
    with pytest.raises(p3d_keys.P3DKeyError) as error:
        p3d_keys.from_torch_state_dict(broken, variables, prefix="backbone.")
    message = str(error.value)
    assert "1 missing from the file:\n  layer3.1.conv4.weight (8, 8, 3, 1, 1)" in message
    assert "1 unexpected in the file:\n  layer5.0.conv1.weight" in message
    assert "groupconv_2.weight: file (8, 3, 1, 1), model (8, 9, 1, 1)" in message


# ------------------------------------------------------------- detection-style input


def test_deeplesion_slices_through_backbone_and_gtm_give_fpn_levels():
    hu = np.random.default_rng(0).uniform(-1500, 2000, (2, ct_slices.DEEPLESION_SLICES, 64, 64))
    hu[0, 0, 0, :3] = (-1024, 1050, 3000)
    x = ct_slices.slices_to_input(hu)
    assert x.shape == (2, 9, 64, 64, 1) and x.dtype == np.float32
    low, high = -123.675 / 58.395, (255 - 123.675) / 58.395
    np.testing.assert_allclose(x[0, 0, 0, :3, 0], (low, high, high), rtol=1e-6)
    assert x.min() >= low - 1e-6 and x.max() <= high + 1e-6
    # The full-size MP3D-63 + GTM at the reference's 512 x 512 test scale (shapes only).
    full = flax_backbone("mp3d", "63", "groupconv", norm="group")
    variables = jax.eval_shape(full.init, jax.random.key(0), jnp.zeros((1, 9, 64, 64, 1)))
    levels = jax.eval_shape(full.apply, variables, jnp.zeros((2, 9, 512, 512, 1)))
    assert {k: v.shape for k, v in levels.items()} == {
        "layer1": (2, 128, 128, 256), "layer2": (2, 64, 64, 512),
        "layer3": (2, 32, 32, 1024), "layer4": (2, 16, 16, 2048),
    }  # fmt: skip
    # A narrow one computed on the windowed slices: strides 4, 8, 16, 32; finite maps.
    for arch, conversion in (("mp3d", "groupconv"), ("p3d", "centre")):
        model = flax_backbone(arch, "18ba", conversion, widths=(8, 8, 8, 8))
        levels = model.apply(model.init(jax.random.key(0), x), x)
        assert [v.shape for v in levels.values()] == [(2, 16, 16, 8), (2, 8, 8, 8), (2, 4, 4, 8), (2, 2, 2, 8)]
        assert all(np.isfinite(np.asarray(v)).all() for v in levels.values())


def test_gtm_needs_the_slices_it_was_built_for():
    model = flax_backbone("mp3d", "18ba", "groupconv", widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="built for 9 slices but layer1 has depth 5"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 5, 32, 32, 1)))
    with pytest.raises(ValueError, match="needs at least 9 slices; the input has 3"):
        jax.eval_shape(p3d("p3d", "63").init, jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1)))


def test_gtm_starts_as_the_slice_average():
    model = flax_backbone("mp3d", "18ba", "groupconv", widths=(8, 8, 8, 8))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 9, 32, 32, 1), np.float32))
    variables = model.init(jax.random.key(0), x)
    levels = model.apply(variables, x)
    features = model.backbone.apply({k: v["backbone"] for k, v in variables.items()}, x)
    np.testing.assert_allclose(levels["layer3"], features["layer3"].mean(axis=1), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- VDT pre-training


@pytest.mark.parametrize("variant", ["63", "18ba"])
def test_mp3d_classifies_vdt_volumes_and_keeps_depth_three(variant):
    model = p3d("mp3d", variant, num_classes=7, widths=(8, 8, 8, 8))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 32, 32, 1), np.float32))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x)
    assert logits.shape == (4, 7) and logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    features = model.clone(num_classes=None).apply(variables, x)
    assert [f.shape[1] for f in features.values()] == [3] * 5  # stem and every stage keep the 3 slices
    residual_norm = "norm_4"
    scales = variables["params"]["layer1_0"][residual_norm]["scale"]
    # Bottlenecks start as identity (zero last-norm scale); basic blocks cannot (ReLU after norm_4).
    assert float(jnp.abs(scales).max()) == (0.0 if variant == "63" else 1.0)


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
    import configs.default

    config = configs.default.get_config()
    config.model.arch, config.model.p3d_variant = "p3d", "18ba"
    model = factory.build_model(config.model, num_classes=None)
    assert model.depth_pooling and model.stage_sizes == (2, 2, 2, 2) and model.block_cls is P3DBasicBlock
    assert model.widths == (16, 32, 64, 128) and model.conv_impl == "depth_taps"
    config.model.depth_stride = True
    with pytest.raises(ValueError, match="config.model.depth_stride=True has no meaning for arch 'p3d'"):
        factory.build_model(config.model, num_classes=3)
    config.model.arch = "p4d"
    with pytest.raises(ValueError, match="unknown config.model.arch 'p4d'"):
        factory.build_model(config.model, num_classes=3)

"""Initialising from pre-trained weights: vdt-jax checkpoints and PyTorch files into ResNets and UNets."""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tests.fakes import ArrayTask, tiny_config
from vdt_jax import checkpointing
from vdt_jax.errors import ConfigError
from vdt_jax.models.resnet3d import resnet3d
from vdt_jax.models.unet3d import UNet3D
from vdt_jax.train import state as state_lib
from vdt_jax.weights import files, pretrained
from vdt_jax.weights.keys import WeightConversionError, to_torch_state_dict

WIDTHS = (8, 8, 16, 16)


def random_like(tree, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), tree)


def init(model, channels=1, seed=1):
    """Random variables shaped like the model's (a stand-in for model.init, without compiling it)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 16, 16, channels)))
    return random_like({"params": shapes["params"], "batch_stats": shapes["batch_stats"]}, seed)


def save_checkpoint(workdir, model, variables, step):
    """A checkpoint as the training loop writes it (state, data iterator position, config)."""
    state = state_lib.TrainState.create(apply_fn=model.apply, tx=optax.sgd(0.1), **variables)
    ckpt = checkpointing.Checkpointer(str(workdir), every_steps=1, keep=1, async_save=False)
    ckpt.save(step, state, iter(grain.MapDataset.range(4).to_iter_dataset()), ml_collections.ConfigDict({"step": step}), force=True)
    ckpt.close()


def unet(channels=3, **kwargs):
    return UNet3D(encoder=resnet3d(10, num_classes=None, widths=WIDTHS, stem_stride=False, depth_stride=True, **kwargs), num_classes=channels)


def assert_equal_trees(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def pretraining_run(tmp_path_factory):
    """A vdt-jax checkpoint of a 10-class ResNet-10 (as pre-training writes it), and its variables."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    model = resnet3d(10, num_classes=10, widths=WIDTHS)
    variables = init(model, seed=0)
    save_checkpoint(workdir, model, variables, step=1)
    return workdir, variables


def test_a_pretraining_checkpoint_fills_the_unet_encoder(pretraining_run):
    workdir, source = pretraining_run
    template = init(unet())
    variables, report = pretrained.initial_variables(workdir, template)
    expected_encoder = {c: {k: v for k, v in source[c].items() if k != "fc"} for c in ("params", "batch_stats")}
    assert_equal_trees({c: variables[c]["encoder"] for c in variables}, expected_encoder)
    for module in ("up1", "up4", "head"):  # the decoder keeps its fresh initialisation
        assert_equal_trees(variables["params"][module], template["params"][module])
    assert jax.tree.structure(variables) == jax.tree.structure(template)
    assert report.target == "encoder" and "conv1.weight" in report.loaded
    assert {"up1", "up2", "up3", "up4", "head_conv", "head_norm", "head"} <= set(report.new)
    assert "fc.weight" in report.unused
    assert "loaded 60 tensors into encoder/" in report.summary()
    assert "  encoder/layer4.0.downsample.1.running_var\n" in report.details()


def test_classifier_is_reinitialised_when_the_class_count_differs(pretraining_run):
    workdir, source = pretraining_run
    template = init(resnet3d(10, num_classes=2, widths=WIDTHS, depth_stride=True))
    variables, report = pretrained.initial_variables(workdir, template)
    assert_equal_trees(variables["params"]["layer4_0"], source["params"]["layer4_0"])
    assert_equal_trees(variables["params"]["fc"], template["params"]["fc"])
    assert "10 classes in the file, 2 in the model" in report.new["fc"]
    same = init(resnet3d(10, num_classes=10, widths=WIDTHS))
    variables, report = pretrained.initial_variables(workdir, same)
    assert_equal_trees(variables, source)
    assert not report.new


def test_pytorch_file_with_adapted_input_channels_and_no_classifier(tmp_path, pretraining_run):
    _, source = pretraining_run
    path = tmp_path / "backbone.safetensors"
    files.export_torch_weights(source, path, keys="mmcls", backbone_only=True)
    template = init(resnet3d(10, num_classes=3, widths=WIDTHS), channels=2)
    variables, report = pretrained.initial_variables(str(path), template, in_channels_reduce="sum")
    kernel = source["params"]["conv1"]["kernel"]  # (7, 7, 7, 1, 8): one input channel spread over two
    np.testing.assert_allclose(variables["params"]["conv1"]["kernel"], np.concatenate([kernel / 2, kernel / 2], axis=3), rtol=1e-6)
    assert "conv1.weight" in report.adapted and "repeated to 2" in report.adapted["conv1.weight"]
    assert report.new == {"fc": "the source has no classifier"}
    assert_equal_trees(variables["params"]["fc"], template["params"]["fc"])


def test_a_finetuned_unet_checkpoint_gives_its_encoder(tmp_path):
    model = unet()
    source = init(model, seed=3)
    save_checkpoint(tmp_path, model, source, step=5)
    target = init(resnet3d(10, num_classes=2, widths=WIDTHS, depth_stride=True))
    variables, report = pretrained.initial_variables(str(tmp_path), target)
    assert_equal_trees(variables["params"]["layer2_0"], source["params"]["encoder"]["layer2_0"])
    assert report.new == {"fc": "the source has no classifier"}


def test_bad_sources_are_rejected_with_the_reason(tmp_path, pretraining_run):
    _, source = pretraining_run
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        pretrained.initial_variables(str(tmp_path / "missing.pth"), init(unet()))
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="neither a vdt-jax workdir/checkpoint folder nor a weight file"):
        pretrained.initial_variables(str(tmp_path / "weights.npz"), init(unet()))
    path = tmp_path / "r10.safetensors"
    files.export_torch_weights(source, path)
    deeper = init(resnet3d(18, num_classes=10, widths=WIDTHS))
    with pytest.raises(WeightConversionError, match="ResNet-10.*ResNet-18"):
        pretrained.initial_variables(str(path), deeper)


def test_trainable_mask_freezes_named_stages():
    params = init(unet())["params"]
    mask = pretrained.trainable_mask(params, ("stem", "layer1"), ("encoder",))
    assert not mask["encoder"]["conv1"]["kernel"] and not mask["encoder"]["bn1"]["scale"]
    assert not mask["encoder"]["layer1_0"]["conv1"]["kernel"]
    assert mask["encoder"]["layer2_0"]["conv1"]["kernel"] and mask["up4"]["conv1"]["kernel"]
    everything = pretrained.trainable_mask(params, ("encoder",), ("encoder",))
    assert not any(jax.tree.leaves(everything["encoder"])) and all(jax.tree.leaves(everything["head"]))
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['layer5'\]"):
        pretrained.trainable_mask(params, ("layer5",))


def test_pretraining_task_starts_from_init_from(tmp_path, pretraining_run):
    _, source = pretraining_run
    path = tmp_path / "r10.safetensors"
    files.export_torch_weights(source, path)
    task = ArrayTask(tiny_config(init_from=str(path)), num_classes=10)
    template = init(task.build_model())
    variables = task.initial_variables(template)
    assert_equal_trees(variables["params"], source["params"])
    assert ArrayTask(tiny_config(), num_classes=10).initial_variables(template) is None


def test_auto_init_uses_the_demo_pretraining_workdir_when_it_has_a_checkpoint(tmp_path, monkeypatch, capsys):
    from vdt_jax.finetune.base import resolve_init_from

    monkeypatch.chdir(tmp_path)
    assert resolve_init_from("auto") == ""
    assert "training from scratch" in capsys.readouterr().out
    (tmp_path / "workdirs" / "pretrain_demo" / "checkpoints" / "624").mkdir(parents=True)
    assert resolve_init_from("auto") == str(tmp_path / "workdirs" / "pretrain_demo")
    assert resolve_init_from("/weights/r3d18.pth") == "/weights/r3d18.pth" and resolve_init_from("") == ""


def write_card(path, **architecture):
    import json

    card = {"format": "vdt-jax model card", "version": 1, "task": "vdt_pretraining", "source": {"step": 1}}
    card["architecture"] = {"network": "ResNet3D", "in_channels": 1, "num_classes": 10, "depth": 10, "widths": list(WIDTHS),
                            "norm": "batch", "depth_stride": False, "stem_stride": True, **architecture}
    with open(path, "w") as f:
        json.dump(card, f)


def test_a_model_card_of_another_backbone_is_refused_before_loading(tmp_path):
    from vdt_jax.model_card import ModelCardError

    model = resnet3d(10, num_classes=2, widths=WIDTHS)
    template = init(model)
    path = str(tmp_path / "r3d.safetensors")
    files.write_state_dict(to_torch_state_dict(init(resnet3d(10, num_classes=10, widths=WIDTHS))), path)
    target = ml_collections.ConfigDict({"depth": 10, "widths": WIDTHS, "norm": "batch", "depth_stride": True, "stem_stride": True})
    write_card(path + ".json", widths=[16, 32, 64, 128])
    with pytest.raises(ModelCardError, match=r"r3d.safetensors.json describes another backbone \(model.widths: \[16, 32, 64, 128\] in the card, \[8, 8, 16, 16\] here\)"):
        pretrained.initial_variables(path, template, model_config=target)
    write_card(path + ".json")  # same backbone, other strides: loads, and the report says what differs
    _, report = pretrained.initial_variables(path, template, model_config=target)
    assert "depth_stride False -> True" in report.adapted["(model card)"] and "vdt_pretraining run, step 1" in report.summary()
    _, report = pretrained.initial_variables(path, template)  # without the target's config: no card check
    assert "(model card)" not in report.adapted


def test_the_card_of_a_workdir_is_found_from_its_checkpoint_folders(pretraining_run):
    import os

    workdir, _ = pretraining_run
    write_card(os.path.join(workdir, "model_card.json"), norm="group")
    target = ml_collections.ConfigDict({"depth": 10, "widths": WIDTHS, "norm": "batch"})
    for where in (workdir, os.path.join(workdir, "checkpoints"), os.path.join(workdir, "checkpoints", "1")):
        with pytest.raises(ValueError, match=r"model.norm: \"?group\"? in the card"):
            pretrained.check_source_card(where, target)
    os.remove(os.path.join(workdir, "model_card.json"))

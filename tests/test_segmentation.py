"""Tests of vdt_jax.finetune.segmentation: the task end to end on tiny generated NIfTI files."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.finetune_fakes import file_stem, tiny_finetune_config
from vdt_jax.errors import ConfigError
from vdt_jax.finetune import make_task, metrics, nifti, synthetic
from vdt_jax.predict import command
from vdt_jax.train import loop


@pytest.fixture
def dataset(segmentation_dataset):
    return segmentation_dataset


@pytest.fixture
def trained(segmentation_run):
    return segmentation_run


def test_train_evaluate_and_write_predictions(dataset, trained):
    workdir, first, final, _ = trained
    assert first["num_examples"] == 2 and set(first) == {"num_examples", "dice/organ", "dice/lesion", "mean_dice"}
    with open(dataset) as f:
        cases = json.load(f)["validation"]
    folder = os.path.dirname(dataset)
    table = {row.split(",")[0]: row.split(",") for row in open(os.path.join(workdir, "predictions", "dice.csv")).read().splitlines()[1:]}
    organ_dice = []
    for case in cases:
        source = nib.load(os.path.join(folder, case["image"]))
        written = nib.load(os.path.join(workdir, "predictions", file_stem(case["image"]) + ".nii.gz"))
        assert written.shape == source.shape
        np.testing.assert_array_equal(written.affine, source.affine)
        # The reported Dice is the Dice of the written file against the label file.
        truth = np.asarray(nib.load(os.path.join(folder, case["label"])).dataobj)
        dice = metrics.dice_per_class(np.asarray(written.dataobj), truth, 3)
        assert float(table[file_stem(case["image"])][2]) == pytest.approx(dice[1], abs=1e-4)
        organ_dice.append(dice[1])
        with Image.open(os.path.join(workdir, "predictions", file_stem(case["image"]) + ".png")) as png:
            assert png.width > 100 and png.height > 100
    assert final["dice/organ"] == pytest.approx(np.nanmean(organ_dice), abs=1e-6)
    assert sorted(os.listdir(os.path.join(workdir, "predictions"))) == sorted(
        [file_stem(c["image"]) + ext for c in cases for ext in (".nii.gz", ".png")] + ["dice.csv"]
    )
    assert "random" in open(os.path.join(workdir, "init_report.txt")).read()


def test_resume_continues_from_the_checkpoint(trained):
    workdir = trained[0]
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl")) if '"train"' in line]
    assert steps == [2, 4, 6]  # the second run started at step 4, not from scratch
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())[-1] == 6


def test_lps_file_gets_the_same_prediction_as_its_ras_twin(dataset, trained):
    workdir, _, _, labels = trained
    np.testing.assert_array_equal(labels[0], labels[1])  # model space (predict's tests compare probabilities too)
    ras = nib.load(os.path.join(workdir, "predictions", "case_004.nii.gz"))
    lps = nib.load(os.path.join(workdir, "predictions", "twin_lps.nii.gz"))
    assert "".join(nib.aff2axcodes(lps.affine)) == "LPS"
    np.testing.assert_array_equal(np.asarray(lps.dataobj), np.asarray(ras.dataobj)[::-1, ::-1])


def test_bad_volumes_stop_the_run_before_training_and_name_the_file(dataset, tmp_path):
    folder = os.path.dirname(dataset)
    with open(dataset) as f:
        data = json.load(f)
    for entry in data["training"] + data["validation"]:  # the copy lives elsewhere: absolute paths
        entry.update({k: os.path.join(folder, v) for k, v in entry.items()})
    label = nib.load(data["training"][0]["label"])
    wrong = np.asarray(label.dataobj).copy()
    wrong[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(wrong, label.affine, label.header), str(tmp_path / "bad_label.nii.gz"))
    data["training"][0]["label"] = str(tmp_path / "bad_label.nii.gz")
    bad = tmp_path / "dataset.json"
    bad.write_text(json.dumps(data))
    config = tiny_finetune_config("segmentation", str(bad), str(tmp_path / "cache"))
    with pytest.raises(nifti.NiftiError, match=r"dataset.json training\[0\]: .*bad_label.nii.gz: label values \[7\] are outside the 3 declared classes"):
        make_task(config, str(tmp_path / "run"))
    data["training"][0]["label"] = str(tmp_path / "missing.nii.gz")
    bad.write_text(json.dumps(data))
    with pytest.raises(nifti.NiftiError, match=r"training\[0\]: .*missing.nii.gz: NIfTI file not found"):
        make_task(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # nothing was written


@pytest.mark.slow
def test_the_reference_recipe_options_end_to_end(dataset, tmp_path):
    """Slab crops with rescale, the reference head and loss, logit averaging, score resizing, post-processing, pooled Dice;
    predict reproduces the predictions with the same options."""
    config = tiny_finetune_config(
        "segmentation", dataset, str(tmp_path / "cache"), num_train_steps=2, checkpoint_every_steps=100
    )
    config.data.update(crop_sampler="random_z_crop", max_class_ratio=0.95, rescale_size=24, rescale_ratio=(0.8, 1.2))
    config.data.update(flip_axes=(0, 2))
    config.unet.update(up_conv_norm=True, head_channels=4, head_convs=2, head_dropout=0.1)
    config.loss.update(dice_weight=1.0, ce_weight=0.3, dice_denominator="squares", dice_per_sample=True)
    config.eval.update(average="logits", resize="scores", dice="pooled", largest_component=True)
    config.optimizer.update(name="sgd", base_lr=0.02, schedule="poly", min_lr=1e-6)
    workdir = str(tmp_path / "run")
    result = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
    with open(dataset) as f:
        cases = json.load(f)["validation"]
    folder, counts = os.path.dirname(dataset), []
    for case in cases:
        written = np.asarray(nib.load(os.path.join(workdir, "predictions", file_stem(case["image"]) + ".nii.gz")).dataobj)
        assert ndimage.label(written > 0)[1] <= 1  # only the largest foreground component is kept
        counts.append(metrics.dice_counts(written, np.asarray(nib.load(os.path.join(folder, case["label"])).dataobj), 3))
    # The reported Dice is pooled over the cases, computed from the written files.
    assert result == pytest.approx(metrics.pooled_dice(counts, ("background", "organ", "lesion")), abs=1e-9)
    # predict applies the run's own eval options (logit averaging, score resizing, largest component):
    # on the validation cases it writes exactly what training's evaluation wrote.
    out = tmp_path / "predicted"
    command.predict(workdir, dataset, str(out), split="validation", log=lambda line: None)
    for case in cases:
        name = file_stem(case["image"]) + ".nii.gz"
        written = np.asarray(nib.load(os.path.join(workdir, "predictions", name)).dataobj)
        np.testing.assert_array_equal(np.asarray(nib.load(str(out / name)).dataobj), written)
    bad = tiny_finetune_config("segmentation", dataset, str(tmp_path / "cache"))
    bad.eval.dice = "mean"
    with pytest.raises(ConfigError, match="eval.dice must be one of"):
        make_task(bad, str(tmp_path / "bad"))  # before any data is read


def test_a_given_data_path_is_used_even_when_the_config_names_synthetic_data(dataset, tmp_path, monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("the synthetic generator ran although data.path was given")

    monkeypatch.setattr(synthetic, "ensure_dataset", no_generation)
    config = tiny_finetune_config("segmentation", dataset, str(tmp_path / "cache"), **{"data.synthetic": "segmentation"})
    task = make_task(config)
    assert [file_stem(c.image) for c in task.eval_cases] == ["case_004", "twin_lps"]  # the cases of `dataset`
    assert len(task.train_cases) == 4
    config.data.path = str(tmp_path / "missing.json")
    from vdt_jax.errors import UserError

    with pytest.raises(UserError, match=f"--config.data.path={tmp_path / 'missing.json'}: no such file"):
        make_task(config)


def test_the_run_writes_its_model_card_and_curves(dataset, trained):
    workdir, _, final, _ = trained
    card = json.load(open(os.path.join(workdir, "model_card.json")))
    assert card["task"] == "segmentation" and card["class_names"] == ["background", "organ", "lesion"]
    architecture = card["architecture"]
    assert architecture["network"] == "UNet3D" and architecture["widths"] == [8, 8, 16, 16] and architecture["num_classes"] == 3
    assert architecture["parameters"] > 10_000
    assert card["preprocessing"]["target_spacing_xyz_mm"] == [1.8, 1.8, 2.5]
    assert card["preprocessing"]["hu_window_centre_width"] == [40.0, 400.0]
    assert card["preprocessing"]["sliding_window"]["window"] == [8, 12, 12]
    assert card["source"]["step"] == 6 and card["source"]["evaluation"]["step"] == 6
    assert card["source"]["evaluation"]["metrics"]["mean_dice"] == pytest.approx(final["mean_dice"])
    assert "TorchUNet3D(depth=10, widths=(8, 8, 16, 16), in_channels=1, num_classes=3" in card["pytorch"]["code"]
    with Image.open(os.path.join(workdir, "curves.png")) as png:
        assert png.width >= 700 and png.height >= 600  # loss, learning rate and Dice panels

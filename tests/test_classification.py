"""Tests of vdt_jax.finetune.classification: the task end to end on tiny generated NIfTI files."""

from __future__ import annotations

import csv
import json
import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from tests.finetune_fakes import tiny_finetune_config
from vdt_jax import checkpointing
from vdt_jax.errors import ConfigError
from vdt_jax.finetune import augment, make_task, metrics, nifti, synthetic


@pytest.fixture
def manifest(classification_manifest):
    return classification_manifest


@pytest.fixture
def trained(classification_run):
    return classification_run


def test_metrics_match_a_recomputation_from_the_checkpoint(trained):
    workdir, first, final, task = trained
    assert first["num_examples"] == final["num_examples"] == 6
    confusion = [v for k, v in final.items() if k.startswith("confusion/")]
    assert len(confusion) == 4 and sum(confusion) == 6
    variables, _ = checkpointing.load_variables(workdir)
    crops = [augment.CentredCrop(task.config.data.crop_size).map(task.eval_source[i]) for i in range(6)]
    images = jnp.asarray(np.stack([c["image"] for c in crops]))
    labels = np.array([c["label"] for c in crops])
    probs = np.asarray(jax.nn.softmax(task.build_model().apply(variables, images, train=False)))
    assert final["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == labels), abs=1e-6)
    assert final["auc"] == pytest.approx(metrics.binary_auc(probs[:, 1], labels == 1), abs=1e-5)
    tuned = metrics.tuned_threshold_metrics(probs, labels)
    assert {k: final[k] for k in tuned} == pytest.approx(tuned, abs=1e-5) and "tuned/accuracy" not in first
    rows = list(csv.DictReader(open(os.path.join(workdir, "eval_predictions.csv"))))
    assert [int(r["label"]) for r in rows] == labels.tolist()  # manifest order
    np.testing.assert_allclose([float(r["p_malignant"]) for r in rows], probs[:, 1], atol=1e-5)
    summary = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    assert np.sum(summary["confusion_matrix"]["counts"]) == 6


def test_resume_continues_from_the_checkpoint(trained):
    workdir = trained[0]
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl")) if '"train"' in line]
    assert steps == [2, 4, 6]


def test_missing_or_broken_volumes_name_the_manifest_row(manifest, tmp_path):
    rows = list(csv.DictReader(open(manifest)))
    folder = os.path.dirname(manifest)
    for row in rows:
        row["image"] = os.path.join(folder, row["image"])
    rows[3]["image"] = str(tmp_path / "gone.nii.gz")
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = tiny_finetune_config("classification", str(path), str(tmp_path / "cache"))
    with pytest.raises(nifti.NiftiError, match=r"manifest.csv line 5: .*gone.nii.gz: NIfTI file not found"):
        make_task(config)
    nan = np.full((6, 6, 6), np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    rows[3]["image"] = str(tmp_path / "nan.nii.gz")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(nifti.NiftiError, match=r"manifest.csv line 5: .*nan.nii.gz: 216 voxel\(s\) are NaN"):
        make_task(config)


def test_frozen_stages_reach_the_model_so_their_batchnorm_statistics_stay_fixed(manifest, tmp_path):
    config = tiny_finetune_config("classification", manifest, str(tmp_path / "cache"), **{"finetune.freeze": ("stem", "layer1")})
    assert make_task(config).build_model().frozen_stages == ("stem", "layer1")  # see test_resnet3d for their effect
    config.finetune.freeze = ("encoder",)
    assert make_task(config).build_model().frozen_stages == ("stem", "layer1", "layer2", "layer3", "layer4")
    config.eval.tuned_threshold, config.data.class_names = True, ("a", "b", "c")
    with pytest.raises(ConfigError, match="eval.tuned_threshold needs 2 classes"):
        make_task(config)


def test_a_given_data_path_is_used_even_when_the_config_names_synthetic_data(manifest, tmp_path, monkeypatch):
    from vdt_jax.errors import UserError

    def no_generation(*args, **kwargs):
        raise AssertionError("the synthetic generator ran although data.path was given")

    monkeypatch.setattr(synthetic, "ensure_dataset", no_generation)
    config = tiny_finetune_config("classification", manifest, str(tmp_path / "cache"), **{"data.synthetic": "classification"})
    task = make_task(config)
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    assert len(task.train_rows) == sum(r["split"] == "train" for r in rows) == 8
    assert len(task.eval_rows) == sum(r["split"] == "val" for r in rows) == 6
    config.data.path = str(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="no such file"):
        make_task(config)
    config.data.path, config.data.synthetic = "", ""
    with pytest.raises(UserError, match="set --config.data.path to a CSV/JSON manifest"):
        make_task(config)

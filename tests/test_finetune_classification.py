"""Classification fine-tuning end to end on tiny generated NIfTI files, plus manifests, subsets and crops."""

from __future__ import annotations

import csv
import json
import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from tests.finetune_fakes import persistent_compilation_cache, tiny_finetune_config, write_lps_twin
from vdt_jax import checkpointing
from vdt_jax.finetune import augment, datasets, metrics, nifti, synthetic
from vdt_jax.finetune.tasks import make_task
from vdt_jax.train import loop


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("nodules"))
    synthetic.write_classification_dataset(folder, num_train=8, num_val=6, shape=(20, 20, 14), seed=5)
    return os.path.join(folder, "manifest.csv")


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory):
    """4 steps, then a resumed run to 6; returns (workdir, first metrics, final metrics, final task)."""
    workdir = str(tmp_path_factory.mktemp("cls_run"))
    cache = str(tmp_path_factory.mktemp("cache"))
    with persistent_compilation_cache(str(tmp_path_factory.mktemp("xla"))):
        config = tiny_finetune_config("classification", manifest, cache)
        first = loop.train_and_evaluate(config, workdir, make_task(config, workdir))
        config = tiny_finetune_config("classification", manifest, cache, num_train_steps=6)
        task = make_task(config, workdir)
        final = loop.train_and_evaluate(config, workdir, task)
    return workdir, first, final, task


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
    rows = list(csv.DictReader(open(os.path.join(workdir, "eval_predictions.csv"))))
    assert [int(r["label"]) for r in rows] == labels.tolist()  # manifest order
    np.testing.assert_allclose([float(r["p_malignant"]) for r in rows], probs[:, 1], atol=1e-5)
    summary = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    assert np.sum(summary["confusion_matrix"]["counts"]) == 6


def test_resume_continues_from_the_checkpoint(trained):
    workdir = trained[0]
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl")) if '"train"' in line]
    assert steps == [2, 4, 6]


def test_world_centres_crop_the_same_voxels_in_ras_and_lps_files(tmp_path):
    data = np.zeros((12, 10, 8), np.int16)
    data[7, 3, 5] = 1000  # a bright voxel at a known place
    affine = np.diag([0.7, 0.8, 1.5, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 10.0)
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "ras.nii.gz")
    write_lps_twin(str(tmp_path / "ras.nii.gz"), str(tmp_path / "lps.nii.gz"))
    world = tuple(affine @ [7, 3, 5, 1])[:3]
    rows = [datasets.Row(str(tmp_path / n), 0, "train", world, n) for n in ("ras.nii.gz", "lps.nii.gz")]
    cache = datasets.VolumeCache(str(tmp_path / "cache"), datasets.Preprocessing(1, (1.4, 1.6, 1.5), nifti.Intensity(), 2))
    source = datasets.ClassificationSource(rows, [cache.get(r.image) for r in rows], "test")
    for i in range(2):
        crop = augment.CentredCrop((5, 5, 5)).map(source[i])["image"][..., 0]
        assert np.unravel_index(crop.argmax(), crop.shape) == (2, 2, 2)


def test_fraction_is_seeded_stratified_and_nested():
    labels = [0] * 30 + [1] * 10
    items = list(range(40))
    quarter = datasets.select_fraction(items, 0.25, seed=1, strata=labels)
    half = datasets.select_fraction(items, 0.5, seed=1, strata=labels)
    assert sum(labels[i] for i in quarter) == 2 and len(quarter) == 10  # 25% of each class (rounded)
    assert set(quarter) <= set(half) and quarter == sorted(quarter)
    assert datasets.select_fraction(items, 0.25, seed=1, strata=labels) == quarter
    assert datasets.select_fraction(items, 0.25, seed=2, strata=labels) != quarter
    assert len(datasets.select_fraction(items, 0.01, seed=0, strata=labels)) == 2  # at least one per class
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        datasets.select_fraction(items, 0.0, seed=0)


def test_json_manifests_and_bad_rows(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "train": [{"image": "x.nii.gz", "label": 1}], "val": [{"image": "/abs/y.nii", "label": 0, "x": 1, "y": 2, "z": 3}]}))
    rows = datasets.read_manifest(str(path), 2)
    assert [(r.split, r.label, r.centre) for r in rows] == [("train", 1, None), ("val", 0, (1.0, 2.0, 3.0))]
    assert rows[0].image == str(tmp_path / "x.nii.gz") and rows[1].image == "/abs/y.nii"
    csv_path = tmp_path / "m.csv"
    bad = {
        "image,label\nx.nii.gz,1\n": r"header lacks column\(s\) \['split'\]",
        "image,label,split\nx.nii.gz,one,train\n": r"m.csv line 2: label 'one' is not an integer",
        "image,label,split\nx.nii.gz,0,train\nx.nii.gz,2,train\n": r"m.csv line 3: label 2 is outside the 2 declared classes",
        "image,label,split\nx.nii.gz,0,holdout\n": r"line 2: unknown split 'holdout'",
        "image,label,split,x,y,z\nx.nii.gz,0,train,1,,3\n": r"line 2: the centre .* needs three numbers",
        "image,label,split\n,0,train\n": r"line 2: empty 'image'",
        "image,label,split\n": r"the manifest has no rows",
    }
    for text, message in bad.items():
        csv_path.write_text(text)
        with pytest.raises(datasets.ManifestError, match=message):
            datasets.read_manifest(str(csv_path), 2)
    with pytest.raises(datasets.ManifestError, match="manifest not found"):
        datasets.read_manifest(str(tmp_path / "none.csv"), 2)


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

"""Tests of vdt_jax.finetune.manifests: classification manifests, Decathlon dataset.json files and subsets."""

import json

import pytest

from vdt_jax.finetune import manifests


def test_fraction_is_seeded_stratified_and_nested():
    labels = [0] * 30 + [1] * 10
    items = list(range(40))
    quarter = manifests.select_fraction(items, 0.25, seed=1, strata=labels)
    half = manifests.select_fraction(items, 0.5, seed=1, strata=labels)
    assert sum(labels[i] for i in quarter) == 2 and len(quarter) == 10  # 25% of each class (rounded)
    assert set(quarter) <= set(half) and quarter == sorted(quarter)
    assert manifests.select_fraction(items, 0.25, seed=1, strata=labels) == quarter
    assert manifests.select_fraction(items, 0.25, seed=2, strata=labels) != quarter
    assert len(manifests.select_fraction(items, 0.01, seed=0, strata=labels)) == 2  # at least one per class
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        manifests.select_fraction(items, 0.0, seed=0)


def test_json_manifests_and_bad_rows(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "train": [{"image": "x.nii.gz", "label": 1}], "val": [{"image": "/abs/y.nii", "label": 0, "x": 1, "y": 2, "z": 3}]}))
    rows = manifests.read_manifest(str(path), 2)
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
        with pytest.raises(manifests.ManifestError, match=message):
            manifests.read_manifest(str(csv_path), 2)
    with pytest.raises(manifests.ManifestError, match="manifest not found"):
        manifests.read_manifest(str(tmp_path / "none.csv"), 2)


def test_dataset_json_errors_name_the_file_and_entry(tmp_path):
    path = tmp_path / "dataset.json"
    with pytest.raises(manifests.ManifestError, match="dataset.json not found"):
        manifests.read_decathlon(str(path))
    entry = {"image": "a.nii.gz", "label": "a.nii.gz"}
    bad = {
        "'labels' must map": {"training": [entry], "validation": [entry]},
        r"label ids must be 0\.\.1; got \[0, 2\]": {"labels": {"0": "bg", "2": "x"}, "training": [entry], "validation": [entry]},
        r"no 'training' list": {"labels": {"0": "bg"}, "validation": [entry]},
        r"training\[1\]: expected": {"labels": {"0": "bg"}, "training": [entry, {"image": "b.nii.gz"}], "validation": [entry]},
        r"no 'validation' list.*num_val_cases": {"labels": {"0": "bg"}, "training": [entry]},
    }
    for message, content in bad.items():
        path.write_text(json.dumps(content))
        with pytest.raises(manifests.ManifestError, match=message):
            manifests.read_decathlon(str(path))
    path.write_text(json.dumps({"labels": {"background": 0, "liver": 1}, "training": [entry] * 5}))
    train, val, names = manifests.read_decathlon(str(path), num_val_cases=2)
    assert names == ("background", "liver") and len(train) == 3 and len(val) == 2

"""`python -m vdt_jax.predict` on runs written by the real training loop (the session's tiny fine-tuning runs)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tests.finetune_fakes import persistent_compilation_cache, write_lps_twin
from tests.conftest import xla_cache_dir
from vdt_jax.errors import UserError
from vdt_jax.model_card import ModelCardError
from vdt_jax.predict import command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    with persistent_compilation_cache(xla_cache_dir(tmp_path_factory)) as directory:
        yield directory


def run_cli(*args: str, cache: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    return subprocess.run([sys.executable, "-m", "vdt_jax.predict", *args], capture_output=True, text=True, env=env, timeout=600)


def arrays(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_predict_reproduces_the_predictions_training_wrote_bit_for_bit(segmentation_dataset, segmentation_run, tmp_path, tmp_path_factory):
    """The CLI, as a user runs it, on the validation cases of the run's dataset.json."""
    workdir = segmentation_run[0]
    out = tmp_path / "pred"
    args = [f"--workdir={workdir}", f"--input={segmentation_dataset}", "--split=validation", f"--out={out}"]
    completed = run_cli(*args, cache=xla_cache_dir(tmp_path_factory))
    assert completed.returncode == 0, completed.stderr
    assert "step 6: segmentation, classes background, organ, lesion" in completed.stdout
    for name in ("case_004", "twin_lps"):
        assert f"{name} (" in completed.stdout  # one progress line per case, with its time
        written, predicted = nib.load(os.path.join(workdir, "predictions", name + ".nii.gz")), nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(predicted.dataobj), np.asarray(written.dataobj))
        assert predicted.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(predicted.affine, written.affine)
        assert predicted.header.get_qform(coded=True)[1] == written.header.get_qform(coded=True)[1] == 1
    before = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    again = run_cli(*args)  # complete cases are skipped, nothing is rewritten, no model is built
    assert again.returncode == 0 and again.stdout.count("outputs complete, skipped") == 2 and "nothing to do" in again.stdout
    assert {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)} == before


def orientation_copies(source: str, folder) -> dict[str, str]:
    """The same scan as RAS float32, LPS, int16 with scl_slope 0.5, and a 4D file with a singleton 4th axis."""
    image = nib.load(source)
    assert "".join(nib.aff2axcodes(image.affine)) == "RAS"
    hu = np.asarray(image.get_fdata(dtype=np.float32))

    def save(name, data, slope=1.0, inter=0.0):
        copy = nib.Nifti1Image(data, image.affine)
        copy.header.set_slope_inter(slope, inter)
        copy.set_qform(image.affine, code=1)
        copy.set_sform(image.affine, code=2)
        nib.save(copy, str(folder / name))
        return str(folder / name)

    paths = {
        "ras": save("ras.nii.gz", hu),
        "int16_slope": save("int16_slope.nii.gz", np.round((hu + 1024) * 2).astype(np.int16), slope=0.5, inter=-1024),
        "singleton_4d": save("singleton_4d.nii.gz", hu[..., None]),
    }
    paths["lps"] = write_lps_twin(paths["ras"], str(folder / "lps.nii.gz"))
    return paths


def test_ras_lps_int16_and_4d_copies_get_identical_predictions_each_on_its_own_grid(segmentation_dataset, segmentation_run, tmp_path, xla_cache):
    folder = tmp_path / "copies"
    folder.mkdir()
    source = os.path.join(os.path.dirname(segmentation_dataset), "imagesTr", "case_004.nii.gz")
    paths = orientation_copies(source, folder)
    out = tmp_path / "out"
    lines = []
    command.predict(segmentation_run[0], str(folder), str(out), probabilities=True, png=True, log=lines.append)
    assert sum(" -> model " in line for line in lines) == 4
    canonical = {}
    for name, path in paths.items():
        source_image, labels = nib.load(path), nib.load(str(out / f"{name}.nii.gz"))
        probabilities = nib.load(str(out / f"{name}_probabilities.nii.gz"))
        assert labels.shape == source_image.shape[:3] and probabilities.shape == (*source_image.shape[:3], 3)
        np.testing.assert_array_equal(labels.affine, source_image.affine)  # exactly on the source grid
        assert "".join(nib.aff2axcodes(labels.affine)) == ("LPS" if name == "lps" else "RAS")
        assert os.path.getsize(out / f"{name}.png") > 1000
        probs, label = np.asarray(probabilities.dataobj), arrays(str(out / f"{name}.nii.gz"))
        # The label's rounded probability is the largest (rounding to 1/255 may tie it with another class).
        np.testing.assert_array_equal(np.take_along_axis(probs, label[..., None].astype(np.int64), -1)[..., 0], probs.max(-1))
        assert abs(probabilities.dataobj.slope - 1 / 255) < 1e-9
        canonical[name] = (
            np.asarray(nib.as_closest_canonical(labels).dataobj),
            np.asarray(nib.as_closest_canonical(probabilities).dataobj),
        )
    reference_labels, reference_probs = canonical.pop("ras")
    assert reference_probs.std() > 0.05 and len(np.unique(reference_labels)) > 1  # not a constant prediction
    for name, (labels, probs) in canonical.items():
        np.testing.assert_array_equal(labels, reference_labels, err_msg=name)
        np.testing.assert_array_equal(probs, reference_probs, err_msg=name)


def test_bad_inputs_are_refused_naming_the_file(segmentation_run, classification_run, tmp_path):
    workdir = segmentation_run[0]
    ok = np.zeros((6, 6, 6), np.float32)
    cases = {
        "missing.nii.gz": (None, r"missing.nii.gz: input file not found"),
        "text.nii.gz": (b"not a volume", r"text.nii.gz: not a readable NIfTI file"),
        "five_d.nii.gz": (np.zeros((6, 6, 6, 2, 2), np.float32), r"five_d.nii.gz: has 5 dimensions \(6, 6, 6, 2, 2\)"),
        "channels.nii.gz": (np.zeros((6, 6, 6, 3), np.float32), r"channels.nii.gz: has 3 values on its 4th axis .*expected 1 channel"),
        "nan.nii.gz": (np.where(np.arange(216).reshape(6, 6, 6) == 7, np.nan, ok), r"nan.nii.gz: 1 voxel\(s\) are NaN"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            nib.save(nib.Nifti1Image(content, np.eye(4)), str(path))
        with pytest.raises(UserError, match=message):
            command.predict(workdir, str(path), str(tmp_path / "out"), log=lambda _: None)
    assert not os.path.exists(tmp_path / "out" / "nan.nii.gz")
    with pytest.raises(UserError, match=r"nope: no such directory"):
        command.predict(str(tmp_path / "nope"), str(tmp_path), str(tmp_path / "out"))
    pretraining = tmp_path / "pretraining"
    shutil.copytree(classification_run[0], pretraining)
    config = json.load(open(pretraining / "config.json"))
    del config["task"]
    (pretraining / "config.json").write_text(json.dumps({**config, "vdt": {}}))
    with pytest.raises(UserError, match=r"pretraining: a pre-training run .*python -m vdt_jax.finetune"):
        command.predict(str(pretraining), str(tmp_path), str(tmp_path / "out"))


def test_the_cli_prints_one_error_line_and_exits_2(segmentation_run, tmp_path):
    completed = run_cli(f"--workdir={segmentation_run[0]}", f"--input={tmp_path / 'gone.nii.gz'}", f"--out={tmp_path}")
    assert completed.returncode == 2, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'gone.nii.gz'}: input file not found"] and "Traceback" not in completed.stderr


def test_a_model_card_that_contradicts_the_checkpoint_is_refused(segmentation_dataset, segmentation_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(segmentation_run[0], workdir)
    card = json.load(open(workdir / "model_card.json"))
    card["architecture"]["widths"] = [16, 32, 64, 128]
    card["preprocessing"]["hu_window_centre_width"] = [50.0, 350.0]
    (workdir / "model_card.json").write_text(json.dumps(card))
    image = os.path.join(os.path.dirname(segmentation_dataset), "imagesTr", "case_004.nii.gz")
    expected = (
        r"model_card.json does not match checkpoint step 6's config .*architecture.widths: \[16, 32, 64, 128\] vs \[8, 8, 16, 16\]; "
        r"preprocessing.hu_window_centre_width: \[50.0, 350.0\] vs \[40.0, 400.0\]"
    )
    with pytest.raises(ModelCardError, match=expected):
        command.predict(str(workdir), image, str(tmp_path / "out"))


def test_overwrite_and_outputs_of_another_step(segmentation_dataset, segmentation_run, tmp_path, xla_cache):
    workdir = segmentation_run[0]
    image = os.path.join(os.path.dirname(segmentation_dataset), "imagesTr", "twin_lps.nii.gz")
    out = tmp_path / "out"
    command.predict(workdir, image, str(out), log=lambda _: None)
    with pytest.raises(UserError, match=r"predict_info.json: --out holds outputs of .* step 6 .* not of .* step 4"):
        command.predict(workdir, image, str(out), step=4)
    first = os.stat(out / "twin_lps.nii.gz").st_mtime_ns
    lines = []
    command.predict(workdir, image, str(out), step=4, overwrite=True, log=lines.append)
    assert any(line.startswith("twin_lps (1/1)") for line in lines) and os.stat(out / "twin_lps.nii.gz").st_mtime_ns != first
    assert json.load(open(out / "predict_info.json"))["step"] == 4


def test_classification_writes_the_probabilities_training_computed(classification_manifest, classification_run, tmp_path, xla_cache):
    workdir = classification_run[0]
    out = tmp_path / "cls"
    lines = []
    command.predict(workdir, classification_manifest, str(out), split="val", log=lines.append)
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    expected = list(csv.DictReader(open(os.path.join(workdir, "eval_predictions.csv"))))
    assert len(rows) == len(expected) == 6 and all(r["x"] for r in rows)  # one row per manifest row, crop centres kept
    assert [r["image"] for r in rows] == [r["image"] for r in expected]
    for row, reference in zip(rows, expected):
        assert (row["p_benign"], row["p_malignant"]) == (reference["p_benign"], reference["p_malignant"])
        assert int(row["prediction"]) == int(reference["prediction"]) and row["predicted_class"] in ("benign", "malignant")
    folder = tmp_path / "volumes"  # whole volumes, no centres: one row per file, cropped at the volume centre
    folder.mkdir()
    for row in expected[:2]:
        shutil.copy(row["image"], folder)
    command.predict(workdir, str(folder), str(tmp_path / "whole"), tta="flips", log=lines.append)
    whole = list(csv.DictReader(open(tmp_path / "whole" / "predictions.csv")))
    assert len(whole) == 2 and whole[0]["x"] == "" and abs(float(whole[0]["p_benign"]) + float(whole[0]["p_malignant"]) - 1) < 1e-5

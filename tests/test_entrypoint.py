"""User mistakes through the real command lines: one `error:` line, exit status 2, no traceback, in seconds.

Every case runs `python -m vdt_jax.<command>` in a subprocess, as a user
would, and checks that the run stops before any data preparation or
compilation (within 10 s, most within about one) and leaves its workdir as
it found it: not created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vdt_jax.finetune import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
CLS = f"--config={CONFIGS}/finetune_default.py:classification"
SEG = f"--config={CONFIGS}/finetune_default.py:segmentation"
MAX_SECONDS = 10.0

# (name, module, arguments, a fragment of the expected error line); {placeholders} name files made below.
CASES = [
    ("config_file_misspelt", "pretrain", [f"--config={CONFIGS}/defautl.py"], "did you mean " + f"{CONFIGS}/default.py"),
    ("config_field_unknown", "pretrain", ["--config.not_a_field=1"], "has no field 'not_a_field'"),
    ("config_field_misspelt", "pretrain", ["--config.batch_sizee=32"], "did you mean --config.batch_size?"),
    ("config_field_without_parent", "pretrain", ["--config.widths=(8,8,8,8)"], "did you mean --config.model.widths?"),
    ("config_value_bad", "pretrain", ["--config.batch_size=abc"], "--config.batch_size=abc"),
    ("flag_misspelt", "pretrain", ["--workdirr=x"], "workdirr"),
    ("positional_argument", "pretrain", ["demo"], "unexpected arguments: demo"),
    ("workdir_is_a_file", "pretrain", ["--workdir={a_file}"], "is a file"),
    ("workdir_under_a_file", "pretrain", ["--workdir={a_file}/run"], "cannot be created"),
    ("init_from_missing", "pretrain", ["--config.init_from={missing}.pth"], "--config.init_from="),
    ("multi_process_half_configured", "pretrain", ["--coordinator_address=127.0.0.1:8476", "--num_processes=2"],
     "half configured"),
    ("bn_group_size_not_dividing_the_batch", "pretrain", ["--config.model.bn_group_size=48"],
     "--config.model.bn_group_size=48 must be 0"),
    ("dataset_not_prepared", "pretrain", [f"--config={CONFIGS}/imagenet_r3d18.py", "--config.data.data_dir={empty_dir}"],
     "dataset 'imagenet2012' is not prepared"),
    ("finetune_data_path_missing", "finetune", [CLS, "--config.data.path={missing}.csv"], "--config.data.path="),
    ("finetune_config_argument_misspelt", "finetune", [f"--config={CONFIGS}/finetune_default.py:classificaton"],
     "takes segmentation or classification"),
    ("finetune_no_data", "finetune", [SEG, "--config.data.synthetic="], "set --config.data.path to a dataset.json"),
    ("finetune_manifest_label_out_of_range", "finetune", [CLS, "--config.data.path={bad_label_csv}"], "label 7 is outside"),
    ("finetune_manifest_split_missing", "finetune", [CLS, "--config.data.path={good_csv}", "--config.data.eval_split=test"],
     "no rows in split 'test'"),
    ("finetune_bad_nifti", "finetune", [CLS, "--config.data.path={bad_nifti_csv}"], "not a readable NIfTI file"),
    ("finetune_label_file_missing", "finetune", [SEG, "--config.data.path={dataset_json}"], "not found"),
    ("finetune_init_from_missing", "finetune", [CLS, "--config.init_from={missing}"], "--config.init_from="),
    ("export_empty_workdir", "export", ["--workdir={empty_dir}", "--out={tmp}/model.pth"], "holds no checkpoints"),
    ("export_no_out", "export", ["--workdir={empty_dir}"], "--out"),
    ("export_unknown_extension", "export", ["--workdir={fake_run}", "--out={tmp}/model.onnx"], "unknown extension '.onnx'"),
    ("predict_not_a_run", "predict", ["--workdir={empty_dir}", "--input={good_csv}", "--out={workdir}"],
     "holds no checkpoints/ folder"),
    ("predict_no_out", "predict", ["--workdir={fake_run}", "--input={good_csv}"], "--input and --out are required"),
    ("predict_positional_argument", "predict", ["--workdir={fake_run}", "scans"], "unexpected arguments: scans"),
    ("sweep_pretrained_missing", "finetune.sweep", ["--pretrained={missing}", "--sweep_dir={workdir}"], "--pretrained="),
    ("sweep_fractions_not_numbers", "finetune.sweep", ["--fractions=half", "--sweep_dir={workdir}"],
     "--fractions=half: expected comma-separated floats"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("mistakes")
    cls = tmp / "cls"
    synthetic.write_classification_dataset(str(cls), num_train=2, num_val=2, shape=(12, 12, 8), seed=1)
    (tmp / "a_file").write_text("not a folder")
    (tmp / "empty").mkdir()
    (tmp / "fake_run" / "checkpoints").mkdir(parents=True)
    (tmp / "bad_label.csv").write_text(f"image,label,split\n{cls}/volumes/none.nii.gz,7,train\n")
    (tmp / "not_nifti.nii.gz").write_text("garbage")
    (tmp / "bad_nifti.csv").write_text(f"image,label,split\n{tmp}/not_nifti.nii.gz,0,train\n{tmp}/not_nifti.nii.gz,1,val\n")
    image = sorted((cls / "volumes").iterdir())[0]
    dataset = {"labels": {"0": "background", "1": "organ"}, "training": [{"image": str(image), "label": "./missing.nii.gz"}],
               "validation": [{"image": str(image), "label": str(image)}]}  # fmt: skip
    (tmp / "dataset.json").write_text(json.dumps(dataset))
    return {
        "tmp": str(tmp), "a_file": str(tmp / "a_file"), "missing": str(tmp / "missing"), "empty_dir": str(tmp / "empty"),
        "fake_run": str(tmp / "fake_run"), "bad_label_csv": str(tmp / "bad_label.csv"), "good_csv": str(cls / "manifest.csv"),
        "bad_nifti_csv": str(tmp / "bad_nifti.csv"), "dataset_json": str(tmp / "dataset.json"),
    }  # fmt: skip


def run_cli(module: str, args: list[str], cwd: str, **env) -> tuple[subprocess.CompletedProcess, float]:
    environment = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", **env}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", f"vdt_jax.{module}", *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    return result, time.perf_counter() - start


@pytest.mark.parametrize("name, module, args, expected", CASES, ids=[case[0] for case in CASES])
def test_a_mistake_ends_in_one_error_line_within_seconds(name, module, args, expected, files, tmp_path):
    workdir = tmp_path / "run"
    values = {**files, "workdir": str(workdir)}
    args = [arg.format(**values) for arg in args]
    if module in ("pretrain", "finetune") and not any(a.startswith("--workdir=") for a in args):
        args.append(f"--workdir={workdir}")
    result, seconds = run_cli(module, args, cwd=str(tmp_path))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert seconds < MAX_SECONDS, f"{name} took {seconds:.1f} s"
    assert not workdir.exists()  # a failed start leaves no folder behind
    print(f"{name}: {seconds:.2f} s")


def test_vdt_traceback_shows_the_traceback(tmp_path):
    result, _ = run_cli("pretrain", ["--config.init_from=/no/such/file.pth"], cwd=str(tmp_path), VDT_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in result.stderr and "UserError" in result.stderr


def test_print_config_prints_the_resolved_config_and_exits(tmp_path):
    result, _ = run_cli("finetune", [CLS, "--config.batch_size=24", "--print_config", f"--workdir={tmp_path}/run"],
                        cwd=str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "batch_size: 24" in result.stdout and "task: classification" in result.stdout
    assert "class_names:" in result.stdout and not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["pretrain", "finetune", "finetune.sweep", "export", "predict"])
def test_help_keeps_the_usage_text_and_names_print_config(module, tmp_path):
    result, _ = run_cli(module, ["--help"], cwd=str(tmp_path))
    usage = result.stdout
    assert f"python -m vdt_jax.{module}" in usage
    continued = [line for line in usage.splitlines() if line.rstrip().endswith("\\")]
    assert continued, "the docstring's line continuations were lost"
    if module not in ("export", "predict"):
        assert "--print_config" in usage

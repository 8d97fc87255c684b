"""`python -m vdt_jax.pretrain` end to end on the tiny built-in dataset: run, resume, summary."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pretrain(workdir, data_dir, steps):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    args = [
        sys.executable, "-m", "vdt_jax.pretrain", f"--workdir={workdir}",
        "--config.data.name=vdt_shapes/tiny", f"--config.data.data_dir={data_dir}",
        "--config.data.image_size=16", "--config.data.eval_resize=18",
        "--config.model.widths=(8,8,8,8)", "--config.batch_size=8", "--config.eval_batch_size=50",
        f"--config.num_train_steps={steps}", "--config.log_every_steps=2", "--config.checkpoint_every_steps=2",
    ]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_cli_trains_prints_summary_and_resumes(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    out = run_pretrain(workdir, data_dir, steps=2)
    assert "step       2/2" in out
    assert "Validation top-1" in out and str(workdir / "checkpoints") in out
    out = run_pretrain(workdir, data_dir, steps=4)  # same command, longer: continues from step 2
    assert "Resumed from" in out and "(step 2)" in out
    assert "step       4/4" in out
    saved = json.load(open(workdir / "config.json"))
    assert saved["model"]["widths"] == [8, 8, 8, 8]
    evals = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"eval"' in l]
    assert evals[-1]["num_examples"] == 100  # vdt_shapes/tiny has 100 validation images
    assert os.listdir(workdir / "tensorboard")

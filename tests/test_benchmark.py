"""`python -m vdt_jax.benchmark`: FLOP counts, peaks, spec resolution, and a tiny run without
ml_collections, grain or TFDS (as on a bare accelerator machine). Speeds are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdt_jax.benchmark import flops, jax_step, peaks, spec
from vdt_jax.models import resnet3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_r3d18_forward_cost_matches_the_reference_count():
    model = resnet3d(18, num_classes=1000)
    inputs = jax.ShapeDtypeStruct((1, 3, 224, 224, 1), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 1))))
    macs = flops.forward_macs(model, variables, inputs)
    assert round(macs / 1e9, 1) == 11.2  # REFERENCE.md: in-volume taps only
    assert flops.train_step_flops(model, variables, inputs) == 6 * macs  # ~67 GFLOP per image per step


def test_valid_pairs_count_skips_padding_taps():
    assert flops._valid_pairs(3, 3, 1, 1) == 7  # depth 3, 3 taps, pad 1
    assert flops._valid_pairs(3, 7, 1, 3) == 9  # the stem along depth
    assert flops.conv_macs((2, 3, 4, 4, 5), (3, 1, 1), (1, 1, 1), (1, 0, 0), 6) == 2 * 7 * 16 * 5 * 6


def test_peak_table():
    assert peaks.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peaks.peak_flops("NVIDIA H200", "float16") == 989e12
    assert peaks.peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 156e12
    assert peaks.peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert peaks.peak_flops("TPU v5p", "bfloat16") == 459e12
    assert peaks.peak_flops("TPU v4", "bfloat16") == 275e12
    assert peaks.peak_flops("TPU v6 lite", "bfloat16") == 918e12
    assert peaks.peak_flops("cpu", "float32") is None
    assert peaks.mfu(989e12, 2.0, "NVIDIA H100 80GB HBM3", "bfloat16", 1) == pytest.approx(0.5)
    assert peaks.mfu(1e9, 1.0, "cpu", "float32", 8) is None


def test_spec_from_config_on_cpu_and_accelerator():
    path = os.path.join(REPO, "configs", "imagenet_r3d18_bf16.py")
    cpu = spec.resolve(path, {}, on_cpu=True)
    assert (cpu.depth, cpu.image_size, cpu.batch, cpu.dtype) == (18, 112, 8, "bfloat16")
    accelerator = spec.resolve(path, {"batch": 64}, on_cpu=False)
    assert (accelerator.image_size, accelerator.batch, accelerator.widths) == (224, 64, (64, 128, 256, 512))
    with pytest.raises(ValueError, match="--dtype=float64"):
        spec.resolve(path, {"dtype": "float64"}, on_cpu=True)
    with pytest.raises(ValueError, match="not divisible"):
        spec.resolve(path, {"batch": 12}, on_cpu=True)  # 8 fake devices


def test_spec_without_ml_collections_uses_the_flags(monkeypatch):
    monkeypatch.setattr(spec, "ml_collections_available", lambda: False)
    assert spec.resolve(None, {}, on_cpu=True) == spec.Spec(image_size=112, batch=8)
    assert spec.resolve(None, {"depth": 10}, on_cpu=False) == spec.Spec(depth=10)
    with pytest.raises(ValueError, match="needs ml_collections"):
        spec.resolve("configs/default.py", {}, on_cpu=True)


BLOCK_IMPORTS = textwrap.dedent(
    """
    import runpy, sys
    BLOCKED = ("ml_collections", "grain", "tensorflow_datasets", "tensorflow", "orbax")

    class Blocker:  # as if not installed: imports fail, importlib.util.find_spec says None
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)")

    import importlib.util
    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: (
        None if name.split(".")[0] in BLOCKED else real_find_spec(name, package))
    sys.meta_path.insert(0, Blocker())
    sys.argv = ["vdt_jax.benchmark", *sys.argv[1:]]
    runpy.run_module("vdt_jax.benchmark", run_name="__main__")
    """
)


def test_tiny_run_without_ml_collections_grain_or_tfds(tmp_path):
    out = tmp_path / "result.json"
    args = ["--depth=10", "--widths=8,8,16,16", "--image_size=16", "--batch=8", "--rounds=2", "--pipeline_images=4",
            "--workers=1", f"--json_file={out}", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_IMPORTS, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert results == json.loads(out.read_text())
    assert results["spec"]["source"] == "flags" and results["environment"]["local_devices"] == 8
    steps = results["steps"]
    assert set(steps["jax"]) == {"conv3d", "depth_taps"}
    assert steps["gradient_max_relative_difference"]["depth_taps"] < 1e-4
    assert all(f["images_per_s"] > 0 and f["mfu"] is None and f["xla_flops_per_step"] > 0 for f in steps["jax"].values())
    assert steps["torch"]["device"] == "cpu" and steps["torch"]["images_per_s"] > 0
    assert set(results["pipeline"]["per_core"]) >= {"pil+bilinear_antialias", "opencv+bilinear"}
    assert results["pipeline"]["workers"] == 1 and isinstance(results["verdict"]["input_bound"], bool)


def test_gradient_difference_ignores_rounding_noise_but_not_real_errors():
    reference = {"kernel": np.linspace(-1.0, 1.0, 8), "bias": np.full(2, 1e-7)}
    noisy = {"kernel": reference["kernel"].copy(), "bias": np.full(2, 2e-7)}  # a zero gradient's rounding noise
    # 1e-7 against 1e-3 of the largest gradient (1.0), not against the leaf's own 1e-7.
    assert jax_step.max_relative_difference(reference, noisy) == pytest.approx(1e-4)
    off = {"kernel": reference["kernel"] * (1 + 4.5e-3), "bias": reference["bias"]}  # the XLA:CPU miscompile's size
    assert jax_step.max_relative_difference(reference, off) == pytest.approx(4.5e-3)

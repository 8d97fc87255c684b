"""Tests of vdt_jax.train.loop: evaluation, checkpoint resume and the NaN guard."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.fakes import ArrayTask, tiny_config
from vdt_jax import checkpointing
from vdt_jax.train import loop
from vdt_jax.train import mesh as mesh_lib


def test_evaluation_counts_every_example_exactly_once(tmp_path):
    config = tiny_config(num_train_steps=2)
    task = ArrayTask(config, num_eval=21)  # 21 = one full batch of 16 + 5 real rows and 11 padded
    metrics = loop.train_and_evaluate(config, str(tmp_path), task)
    assert metrics["num_examples"] == 21
    # Recompute top-1 on the host from the final state's logits.
    variables, _ = checkpointing.load_variables(str(tmp_path))
    volumes = task.prepare_inputs({"image": jnp.asarray(task.images[64:])}, None, train=False)
    logits = task.build_model().apply(variables, volumes, train=False)
    expected = np.mean(np.argmax(logits, -1) == task.labels[64:])
    assert metrics["top1"] == pytest.approx(expected, abs=1e-6)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    config = tiny_config(num_train_steps=6, checkpoint_every_steps=3)
    straight = tmp_path / "straight"
    loop.train_and_evaluate(config, str(straight), ArrayTask(config))

    resumed = tmp_path / "resumed"
    served = []

    def dies_at_step_5(batch, mesh, original=mesh_lib.global_batch):
        if len(served) == 4:
            raise KeyboardInterrupt  # as if the process were killed
        served.append(1)
        return original(batch, mesh)

    with monkeypatch.context() as patch:
        patch.setattr(mesh_lib, "global_batch", dies_at_step_5)
        with pytest.raises(KeyboardInterrupt):
            loop.train_and_evaluate(config, str(resumed), ArrayTask(config))
    assert checkpointing.Checkpointer(str(resumed), every_steps=3, keep=3).latest_step() == 3
    loop.train_and_evaluate(config, str(resumed), ArrayTask(config))

    a, _ = checkpointing.load_variables(str(straight), step=6)
    b, saved_config = checkpointing.load_variables(str(resumed), step=6)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert saved_config.model.depth == config.model.depth
    train_lines = [json.loads(l) for l in open(resumed / "metrics.jsonl") if '"train"' in l]
    # The killed run logged steps 2 and 4; the resumed run picked up at step 3 and logged 4 and 6.
    assert [l["step"] for l in train_lines] == [2, 4, 4, 6]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(num_train_steps=50, checkpoint_every_steps=1)
    config.optimizer.base_lr = 1e12
    config.optimizer.weight_decay = 0.0
    with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint is step"):
        loop.train_and_evaluate(config, str(tmp_path), ArrayTask(config))
    variables, _ = checkpointing.load_variables(str(tmp_path))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))
    assert os.path.exists(tmp_path / "config.json")

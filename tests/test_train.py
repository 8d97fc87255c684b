"""The train step, sharding, evaluation, checkpoint resume and the NaN guard."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.fakes import ArrayTask, tiny_config
from vdt_jax import checkpointing
from vdt_jax.train import loop, mesh as mesh_lib, optim, state as state_lib, step as step_lib


def one_step(task, devices, batch):
    mesh = mesh_lib.make_mesh(devices)
    schedule = optax.constant_schedule(0.1)
    tx = optim.make_optimizer(task.config.optimizer, schedule)
    state = state_lib.create_train_state(task.build_model(), tx, task.example_inputs(), jax.random.key(0), mesh)
    train = step_lib.jit_train_step(task, schedule, state, mesh)
    state, metrics = train(state, mesh_lib.global_batch(batch, mesh), jax.random.key(1))
    return mesh_lib.to_host(state.variables), mesh_lib.to_host(metrics)


def test_one_device_and_eight_devices_give_the_same_step():
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    task = ArrayTask(tiny_config())
    batch = next(task.train_iterator(seed=0, per_process_batch=16))
    single_vars, single = one_step(task, jax.devices()[:1], batch)
    multi_vars, multi = one_step(task, jax.devices(), batch)
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-5)
    # BatchNorm statistics come from the global batch, not per device.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), multi_vars, single_vars)
    assert not np.allclose(single_vars["batch_stats"]["bn1"]["mean"], 0)


def test_depth_shuffle_is_per_sample_and_off_in_eval():
    task = ArrayTask(tiny_config())
    images = jnp.asarray(task.images[:8])
    train_volumes = task.prepare_inputs({"image": images}, jax.random.key(0), train=True)
    eval_volumes = task.prepare_inputs({"image": images}, None, train=False)
    assert train_volumes.shape == (8, 3, 16, 16, 1)
    np.testing.assert_allclose(eval_volumes[:, 1, :, :, 0], (images[..., 1] - 114.495) / 57.63, rtol=1e-6)
    # Each training volume is a permutation of the eval volume's slices, not all the same one.
    orders = []
    for t, e in zip(np.asarray(train_volumes), np.asarray(eval_volumes)):
        order = [next(j for j in range(3) if np.array_equal(t[i], e[j])) for i in range(3)]
        assert sorted(order) == [0, 1, 2]
        orders.append(tuple(order))
    assert len(set(orders)) > 1


def test_warmup_cosine_schedule_and_lr_scaling():
    config = tiny_config()
    config.optimizer.warmup_epochs = 1.0
    assert optim.learning_rate(config.optimizer, 1024) == pytest.approx(config.optimizer.base_lr * 4)
    schedule = optim.make_schedule(config.optimizer, peak_lr=0.4, total_steps=110, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.2)
    assert float(schedule(10)) == pytest.approx(0.4)
    assert float(schedule(60)) == pytest.approx(0.2, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


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

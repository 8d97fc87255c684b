"""Tests of vdt_jax.train.step: the sharded jitted train step gives the same update on 1 and 8 devices."""

import jax
import numpy as np
import optax

from tests.fakes import ArrayTask, tiny_config
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train import optim
from vdt_jax.train import state as state_lib
from vdt_jax.train import step as step_lib


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

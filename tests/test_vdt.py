"""Tests of vdt_jax.vdt: the variable dimension transform, alone and inside the jitted train step."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.fakes import ArrayTask, tiny_config
from vdt_jax import vdt
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train import state as state_lib
from vdt_jax.train import step as step_lib

# Each colour channel holds one constant, so a slice's value names the channel it came from.
CHANNEL_VALUES = np.array([10, 130, 250], np.uint8)


def coded_images(batch: int, size: int = 4) -> np.ndarray:
    return np.broadcast_to(CHANNEL_VALUES, (batch, size, size, 3)).copy()


def depth_orders(volumes) -> list[tuple[int, ...]]:
    """For each volume (N, 3, H, W, 1), which colour channel each depth slice holds."""
    values = np.rint(np.asarray(volumes, np.float64)[:, :, 0, 0, 0] * vdt.STD + vdt.MEAN).astype(int)
    return [tuple(int(np.flatnonzero(CHANNEL_VALUES == v)[0]) for v in sample) for sample in values]


def test_layout_dtype_and_the_single_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    volumes = vdt.images_to_volumes(jnp.asarray(images), dtype=jnp.bfloat16)
    assert volumes.shape == (2, 3, 5, 7, 1) and volumes.dtype == jnp.bfloat16
    volumes = vdt.images_to_volumes(jnp.asarray(images))
    for d in range(3):  # evaluation keeps R, G, B as depth 0, 1, 2, each with the one mean and std
        np.testing.assert_allclose(volumes[:, d, :, :, 0], (images[..., d] - 114.495) / 57.63, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, H, W, C\)"):
        vdt.images_to_volumes(jnp.zeros((5, 7, 3)))


def test_training_shuffles_each_sample_on_its_own():
    volumes = vdt.images_to_volumes(jnp.asarray(coded_images(64)), jax.random.key(0))
    orders = depth_orders(volumes)
    assert all(sorted(order) == [0, 1, 2] for order in orders)  # a permutation: every slice kept once
    # Per sample, not per batch: 64 samples show all six orders (a per-batch shuffle shows one).
    assert set(orders) == set(itertools.permutations(range(3)))
    assert orders.count((0, 1, 2)) < 32  # and the identity is not the rule


def test_the_order_depends_on_the_key():
    images = jnp.asarray(coded_images(16))
    first = depth_orders(vdt.images_to_volumes(images, jax.random.key(0)))
    again = depth_orders(vdt.images_to_volumes(images, jax.random.key(0)))
    other = depth_orders(vdt.images_to_volumes(images, jax.random.key(1)))
    assert first == again and first != other


def test_host_numpy_version_agrees():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8)
    device = np.asarray(vdt.images_to_volumes(jnp.asarray(images)))
    np.testing.assert_allclose(vdt.images_to_volumes_numpy(images), device, rtol=1e-6, atol=1e-6)
    shuffled = vdt.images_to_volumes_numpy(coded_images(64), np.random.default_rng(2))
    assert shuffled.shape == (64, 3, 4, 4, 1) and shuffled.dtype == np.float32
    assert set(depth_orders(shuffled)) == set(itertools.permutations(range(3)))


class SliceValues(nn.Module):
    """A "network" whose outputs are the first voxel of each depth slice (plus one trainable scale)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x[:, :, 0, 0, 0] * self.param("scale", nn.initializers.ones, ())


class SliceValuesTask(ArrayTask):
    def build_model(self):
        return SliceValues()

    def loss(self, outputs, batch):
        return jnp.mean(outputs**2), {"slices": outputs}

    def eval_metrics(self, outputs, batch):
        return {"slices": outputs}


def test_the_train_step_shuffles_per_sample_and_per_step_and_evaluation_does_not():
    task = SliceValuesTask(tiny_config())
    mesh = mesh_lib.make_mesh()
    schedule = optax.constant_schedule(0.0)  # keep the scale at 1
    state = state_lib.create_train_state(task.build_model(), optax.sgd(schedule), task.example_inputs(), jax.random.key(0), mesh)
    train = step_lib.jit_train_step(task, schedule, state, mesh)
    batch = mesh_lib.global_batch({"image": coded_images(16, size=16), "label": np.zeros(16, np.int32)}, mesh)
    steps = []
    for _ in range(2):
        state, metrics = train(state, batch, jax.random.key(3))
        steps.append(depth_orders(np.asarray(metrics["slices"])[:, :, None, None, None]))
    assert len(set(steps[0])) > 1  # per sample
    assert steps[0] != steps[1]  # the step number is folded into the key
    evaluated = step_lib.jit_eval_step(task, state, mesh)(state, batch)
    assert set(depth_orders(np.asarray(evaluated["slices"])[:, :, None, None, None])) == {(0, 1, 2)}

"""Pure train and eval steps, and their jitted, sharded versions.

`train_step(state, batch, rng) -> (state, metrics)` is the whole update: the
task turns the host batch into model inputs (the VDT for pre-training), the
model runs in train mode, BatchNorm statistics come from the global batch
(the batch axis is sharded, the reductions are global under jit), and the
optimizer applies the gradients. Metrics come back replicated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh

from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train.state import TrainState

Metrics = dict[str, jax.Array]


def train_step(
    state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, task: Any, schedule: optax.Schedule
) -> tuple[TrainState, Metrics]:
    """One optimizer step on one global batch; `rng` is folded with the step number."""
    step_rng = jax.random.fold_in(rng, state.step)
    inputs = task.prepare_inputs(batch, step_rng, train=True)
    dropout_rng = jax.random.fold_in(step_rng, 1)  # for models with dropout; others ignore it

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, updates = state.apply_fn(
            variables, inputs, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng}
        )
        loss, metrics = task.loss(outputs, batch)
        return loss, (metrics, updates.get("batch_stats", state.batch_stats))

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {**metrics, "loss": loss, "learning_rate": schedule(state.step), "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, task: Any) -> Metrics:
    """Masked metric sums over one global eval batch (running BatchNorm statistics)."""
    inputs = task.prepare_inputs(batch, None, train=False)
    outputs = state.apply_fn(state.variables, inputs, train=False)
    return task.eval_metrics(outputs, batch)


def jit_train_step(task: Any, schedule: optax.Schedule, state: TrainState, mesh: Mesh) -> Callable:
    """`train_step` jitted with explicit shardings; the incoming state is donated."""
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(
        functools.partial(train_step, task=task, schedule=schedule),
        in_shardings=(state_sharding, mesh_lib.batch_sharded(mesh), mesh_lib.replicated(mesh)),
        out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
        donate_argnums=(0,),
    )


def jit_eval_step(task: Any, state: TrainState, mesh: Mesh) -> Callable:
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(
        functools.partial(eval_step, task=task),
        in_shardings=(state_sharding, mesh_lib.batch_sharded(mesh)),
        out_shardings=mesh_lib.replicated(mesh),
    )

"""The train state and its creation, directly sharded on the mesh."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state
from jax.sharding import Mesh

from vdt_jax.train import mesh as mesh_lib


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm running statistics (empty for GroupNorm)."""

    batch_stats: Any = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def init_variables(model: nn.Module, example_inputs: jax.Array, rng: jax.Array) -> dict[str, Any]:
    """Model variables {"params", "batch_stats"} from one example input batch."""
    variables = model.init(rng, example_inputs, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_inputs: jax.Array,
    rng: jax.Array,
    mesh: Mesh,
    initial_variables: dict[str, Any] | None = None,
) -> TrainState:
    """Initialise the state replicated over `mesh`, without ever holding an unsharded copy.

    Args:
      model: the network; `model.apply` becomes the state's `apply_fn`.
      tx: the optimizer.
      example_inputs: an input batch (only its shape and dtype matter).
      rng: initialisation key.
      mesh: the device mesh; parameters are replicated (data parallelism).
      initial_variables: complete {"params", "batch_stats"} to start from (for
        example pre-trained weights merged into a fresh template) instead of a
        random initialisation. Passed as arguments, not baked into the program.
    """

    def create(variables: dict[str, Any]) -> TrainState:
        return TrainState.create(apply_fn=model.apply, tx=tx, **variables)

    if initial_variables is None:
        make = lambda: create(init_variables(model, example_inputs, rng))  # noqa: E731
        args: tuple = ()
    else:
        make, args = create, (initial_variables,)
    shapes = jax.eval_shape(make, *args)
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), shapes)
    return jax.jit(make, out_shardings=shardings)(*args)


def abstract_state(state: TrainState) -> TrainState:
    """Shapes, dtypes and shardings of a state: the restore target for checkpoints."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def count_params(params: Any) -> int:
    return int(sum(jnp.size(x) for x in jax.tree.leaves(params)))

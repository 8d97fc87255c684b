"""The `Task` interface: what differs between pre-training and fine-tuning.

The loop (`vdt_jax.train.loop`) only talks to a `Task`: it asks for the model,
example inputs, the training batches, the in-step input transform, the loss,
and an evaluation. Pre-training with the VDT is
`vdt_jax.pretrain.vdt_classification.VDTClassificationTask`; the fine-tuning
tasks live in `vdt_jax.finetune`.

Evaluation has one driver, `Task.eval_outputs`: it runs the jitted eval step
over every eval batch and yields each batch's outputs on the host. Tasks only
reduce them: the default `evaluate` adds up masked sums (top-1, loss); the
fine-tuning tasks gather per-example probabilities or stitch sliding windows.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator

import jax
import ml_collections
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from vdt_jax.train import mesh as mesh_lib

Metrics = dict[str, jax.Array]
HostBatch = dict[str, np.ndarray]


class Task(abc.ABC):
    """The pieces of a training run that depend on the data and the objective."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self._eval_step = None

    # ---- model and data ----
    @abc.abstractmethod
    def build_model(self) -> nn.Module: ...

    @abc.abstractmethod
    def example_inputs(self) -> jax.Array:
        """A model input batch (one example is enough): fixes the parameter shapes."""

    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int: ...

    @abc.abstractmethod
    def train_iterator(self, *, seed: int, per_process_batch: int) -> Iterator[HostBatch]:
        """Endless host batches for this process; must support get_state()/set_state()."""

    @abc.abstractmethod
    def eval_batches(self, *, per_process_batch: int) -> Iterable[HostBatch]:
        """One pass over the evaluation data, padded batches with a bool 'mask' (`vdt_jax.data.loading`)."""

    # ---- inside the jitted step ----
    @abc.abstractmethod
    def prepare_inputs(self, batch: dict[str, jax.Array], rng: jax.Array | None, train: bool) -> jax.Array: ...

    @abc.abstractmethod
    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]: ...

    @abc.abstractmethod
    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        """What one eval batch reports: masked sums with a "count" for the default `evaluate`."""

    # ---- hooks with defaults ----
    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        """Variables to start a fresh run from (pre-trained weights), or None for random init."""
        return None

    def trainable(self, params: Any) -> Any:
        """Pytree of bools (False = frozen) for the optimizer, or None to train everything."""
        return None

    def card_fields(self) -> dict[str, Any] | None:
        """The model card's task, architecture, class_names, preprocessing and pytorch fields (`vdt_jax.model_card`).

        The loop writes them, with the step and the latest evaluation, to the
        workdir's model_card.json at each evaluation and checkpoint; None writes no card.
        """
        return None

    def eval_outputs(self, state: Any, mesh: Mesh) -> Iterator[HostBatch]:
        """`eval_metrics` of every eval batch, fetched to the host (replicated, so every process sees all rows)."""
        from vdt_jax.train.step import jit_eval_step

        if self._eval_step is None:
            self._eval_step = jit_eval_step(self, state, mesh)
        per_process = mesh_lib.per_process_batch_size(self.config.eval_batch_size, mesh)
        for batch in self.eval_batches(per_process_batch=per_process):
            yield mesh_lib.to_host(self._eval_step(state, mesh_lib.global_batch(batch, mesh)))

    def evaluate(self, state: Any, mesh: Mesh) -> dict[str, float]:
        """Add up the per-batch sums of `eval_metrics` and turn them into averages over "count"."""
        totals: dict[str, float] = {}
        for sums in self.eval_outputs(state, mesh):
            for k, v in sums.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = totals.pop("count")
        if count == 0:
            raise ValueError("the evaluation split produced no examples")
        return {"num_examples": count, **{k: v / count for k, v in totals.items()}}

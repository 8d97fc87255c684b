"""Tasks: what differs between pre-training and fine-tuning, behind one interface.

The loop (`vdt_jax.train.loop`) only talks to a `Task`: it asks for the model,
example inputs, the training batches, the in-step input transform, the loss,
and an evaluation. Pre-training on images with the VDT is `VDTClassificationTask`;
fine-tuning tasks live in `vdt_jax.finetune`.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from vdt_jax import vdt
from vdt_jax.models.factory import build_model, compute_dtype
from vdt_jax.train import mesh as mesh_lib

Metrics = dict[str, jax.Array]


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
    def train_iterator(self, *, seed: int, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """Endless host batches for this process; must support get_state()/set_state()."""

    @abc.abstractmethod
    def eval_batches(self, *, per_process_batch: int) -> Iterable[dict[str, np.ndarray]]:
        """One pass over the evaluation data, padded batches with a bool 'mask'."""

    # ---- inside the jitted step ----
    @abc.abstractmethod
    def prepare_inputs(self, batch: dict[str, jax.Array], rng: jax.Array | None, train: bool) -> jax.Array: ...

    @abc.abstractmethod
    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]: ...

    @abc.abstractmethod
    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        """Sums over the unmasked examples of one batch, including a "count"."""

    # ---- hooks with defaults ----
    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        """Variables to start a fresh run from (pre-trained weights), or None for random init."""
        return None

    def trainable(self, params: Any) -> Any:
        """Pytree of bools (False = frozen) for the optimizer, or None to train everything."""
        return None

    def evaluate(self, state: Any, mesh: Mesh) -> dict[str, float]:
        """Run `eval_metrics` over every eval batch and turn the sums into averages."""
        from vdt_jax.train.step import jit_eval_step

        if self._eval_step is None:
            self._eval_step = jit_eval_step(self, state, mesh)
        per_process = mesh_lib.per_process_batch_size(self.config.eval_batch_size, mesh)
        totals: dict[str, float] = {}
        for batch in self.eval_batches(per_process_batch=per_process):
            sums = mesh_lib.to_host(self._eval_step(state, mesh_lib.global_batch(batch, mesh)))
            for k, v in sums.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return self.summarise_eval(totals)

    def summarise_eval(self, totals: dict[str, float]) -> dict[str, float]:
        count = totals.pop("count")
        if count == 0:
            raise ValueError("the evaluation split produced no examples")
        return {"num_examples": count, **{k: v / count for k, v in totals.items()}}


def classification_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> tuple[jax.Array, Metrics]:
    """Mean softmax cross-entropy with label smoothing, plus the batch's top-1 accuracy."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"accuracy": accuracy}


def classification_eval_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    """Masked sums of cross-entropy, top-1 and top-5 hits, and the example count."""
    mask = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]
    hits_k = jnp.any(top_k == labels[:, None], axis=-1)
    return {
        "loss": jnp.sum(ce * mask),
        "top1": jnp.sum((top_k[:, 0] == labels) * mask),
        f"top{k}": jnp.sum(hits_k * mask),
        "count": jnp.sum(mask),
    }


class VDTClassificationTask(Task):
    """Supervised pre-training on images read as 3-slice volumes (the paper's recipe)."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        from vdt_jax.data import pipeline

        self._pipeline = pipeline
        pipeline.prepare_dataset(config.data)
        self.info = pipeline.dataset_info(config.data)

    def build_model(self) -> nn.Module:
        return build_model(self.config.model, num_classes=self.info.num_classes)

    def example_inputs(self) -> jax.Array:
        size = self.config.data.image_size
        return jnp.zeros((1, 3, size, size, 1), compute_dtype(self.config.model.dtype))

    @property
    def num_train_examples(self) -> int:
        return self.info.num_train_examples

    def train_iterator(self, *, seed: int, per_process_batch: int):
        loader = self._pipeline.train_loader(
            self.config.data,
            seed=seed,
            per_process_batch=per_process_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return iter(loader)

    def eval_batches(self, *, per_process_batch: int):
        return self._pipeline.eval_batches(
            self.config.data,
            per_process_batch=per_process_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def prepare_inputs(self, batch, rng, train):
        shuffle = train and self.config.vdt.shuffle_depth
        return vdt.images_to_volumes(
            batch["image"],
            rng if shuffle else None,
            mean=self.config.vdt.mean,
            std=self.config.vdt.std,
            dtype=compute_dtype(self.config.model.dtype),
        )

    def loss(self, outputs, batch):
        return classification_loss(outputs, batch["label"], self.config.optimizer.label_smoothing)

    def eval_metrics(self, outputs, batch):
        return classification_eval_sums(outputs, batch["label"], batch["mask"])

    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        """Start from `config.init_from` (a vdt-jax run or a .pth/.safetensors file) when set; logs what loaded."""
        if not self.config.get("init_from"):
            return None
        from vdt_jax import pretrained

        variables, report = pretrained.initial_variables(self.config.init_from, template)
        if jax.process_index() == 0:
            print(report.summary(), flush=True)
        return variables

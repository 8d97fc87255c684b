"""The pre-training task: image classification with every image read as a 3-slice volume (the paper's recipe)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from vdt_jax import losses, vdt
from vdt_jax.data import images
from vdt_jax.models.factory import build_model, compute_dtype
from vdt_jax.train.task import Task


class VDTClassificationTask(Task):
    """Supervised pre-training on a TFDS image dataset through the VDT.

    The host pipeline (`vdt_jax.data.images`) ships uint8 RGB crops; inside the
    jitted step `prepare_inputs` turns them into one-channel 3-slice volumes,
    shuffling the slice order per sample in training (`vdt_jax.vdt`).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        images.prepare_dataset(config.data)
        self.info = images.dataset_info(config.data)

    def build_model(self) -> nn.Module:
        return build_model(self.config.model, num_classes=self.info.num_classes)

    def example_inputs(self) -> jax.Array:
        size = self.config.data.image_size
        return jnp.zeros((1, 3, size, size, 1), compute_dtype(self.config.model.dtype))

    @property
    def num_train_examples(self) -> int:
        return self.info.num_train_examples

    def train_iterator(self, *, seed: int, per_process_batch: int):
        loader = images.train_loader(
            self.config.data,
            seed=seed,
            per_process_batch=per_process_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return iter(loader)

    def eval_batches(self, *, per_process_batch: int):
        return images.eval_batches(
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
        return losses.classification_loss(outputs, batch["label"], self.config.optimizer.label_smoothing)

    def eval_metrics(self, outputs, batch):
        return losses.classification_eval_sums(outputs, batch["label"], batch["mask"])

    def card_fields(self) -> dict[str, Any]:
        return card_fields(self.config, self.info.class_names or None, self.info.num_classes)

    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        """Start from `config.init_from` (a vdt-jax run or a .pth/.safetensors file) when set; logs what loaded."""
        if not self.config.init_from:
            return None
        from vdt_jax.weights import pretrained

        variables, report = pretrained.initial_variables(self.config.init_from, template)
        if jax.process_index() == 0:
            print(report.summary(), flush=True)
        return variables


def card_fields(config: ml_collections.ConfigDict, class_names: tuple[str, ...] | None, num_classes: int) -> dict[str, Any]:
    """The model card fields of a VDT pre-training run (`vdt_jax.model_card`)."""
    from vdt_jax import model_card
    from vdt_jax.weights import monai_code

    size = int(config.data.image_size)
    return {
        "task": "vdt_pretraining",
        "architecture": model_card.architecture(config.model, network="ResNet3D", in_channels=1, num_classes=num_classes),
        "class_names": list(class_names) if class_names else None,
        "preprocessing": {
            "input": f"an RGB image ({size}x{size} crops in training) read as a one-channel volume of 3 depth slices",
            "layout": f"(N, 3, {size}, {size}, 1) in vdt-jax; (N, 1, 3, {size}, {size}) in PyTorch",
            "slice_order": "random per example in training (the VDT), R, G, B at evaluation",
            "mean_std": [float(config.vdt.mean), float(config.vdt.std)],
            "dataset": config.data.name,
        },
        "pytorch": {
            "export_command": "python -m vdt_jax.export --workdir=<workdir> --out=model.pth",
            "code": monai_code.monai_code_for(config.model, num_classes=num_classes, in_channels=1),
        },
    }

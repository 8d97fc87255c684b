"""3D classification (e.g. LIDC nodule malignancy): crops around manifest centres, a 3D ResNet, AUC."""

from __future__ import annotations

from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np
from flax import linen as nn

from vdt_jax import losses
from vdt_jax.data import loading
from vdt_jax.errors import ConfigError
from vdt_jax.finetune import augment, manifests, metrics, outputs
from vdt_jax.finetune.base import FinetuneTask, data_path, log
from vdt_jax.finetune.volume_cache import ClassificationSource
from vdt_jax.models.factory import build_model


class Classification3DTask(FinetuneTask):
    """Classify 3D crops (around a manifest's world-coordinate centres) with a 3D ResNet.

    Config fields (besides the loop's): data.path (CSV/JSON manifest) or
    data.synthetic="classification", data.class_names, data.train_split /
    eval_split, data.crop_size, data.max_shift, data.rotate_planes,
    data.flip_axes / flip_mode, data.train_fraction / fraction_seed, the intensity and
    spacing fields of `volume_cache.Preprocessing`, and model.* (depth_stride=True for LIDC).

    Evaluation gathers every example's class probabilities (`eval_metrics`
    returns them per example) and reports accuracy, ROC AUC and the confusion
    matrix (with eval.tuned_threshold, also the reference's threshold-tuned
    figures, `metrics.tuned_threshold_metrics`); `eval_predictions.csv` holds
    the probabilities.
    """

    def __init__(self, config: ml_collections.ConfigDict, output_dir: str | None = None):
        if not config.data.class_names:
            raise ConfigError("set data.class_names, e.g. ('benign', 'malignant'): the manifest's labels index them")
        if config.eval.tuned_threshold and len(config.data.class_names) != 2:
            raise ConfigError(f"eval.tuned_threshold needs 2 classes; data.class_names has {len(config.data.class_names)}")
        super().__init__(config, tuple(config.data.class_names), output_dir)
        data = config.data
        rows = manifests.read_manifest(data_path(config), len(self.class_names))
        train_split = manifests.SPLIT_ALIASES.get(data.train_split, data.train_split)
        eval_split = manifests.SPLIT_ALIASES.get(data.eval_split, data.eval_split)
        train = [r for r in rows if r.split == train_split]
        self.eval_rows = [r for r in rows if r.split == eval_split]
        if not train or not self.eval_rows:
            raise ConfigError(
                f"the manifest needs rows in split {train_split!r} and {eval_split!r}; found {len(train)} and {len(self.eval_rows)}"
            )
        fraction = float(data.train_fraction)
        self.train_rows = manifests.select_fraction(train, fraction, data.fraction_seed, [r.label for r in train])
        if fraction < 1.0:
            log(f"data.train_fraction={fraction}: training on {len(self.train_rows)} of {len(train)} examples (stratified).")
        unique = {r.image: r for r in self.train_rows + self.eval_rows}
        items = [(r.image, None, r.where) for r in unique.values()]
        cached = dict(zip(unique, self._preprocess(items, "classification")))
        self.train_source = ClassificationSource(self.train_rows, [cached[r.image] for r in self.train_rows], "train")
        self.eval_source = ClassificationSource(self.eval_rows, [cached[r.image] for r in self.eval_rows], "eval")

    def build_model(self) -> nn.Module:
        config = self.config
        return build_model(config.model, num_classes=len(self.class_names), frozen_stages=config.finetune.freeze)

    @property
    def num_train_examples(self) -> int:
        return len(self.train_source)

    def train_iterator(self, *, seed: int, per_process_batch: int):
        crop = augment.RandomCentredCrop(self.config.data.crop_size, self.config.data.max_shift, self._augment())
        return self._loader(self.train_source, crop, seed=seed, per_process_batch=per_process_batch)

    def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """Centred crops of this process's share, with each example's manifest 'index'; padded and masked."""
        crop_size = tuple(self.config.data.crop_size)

        def batches_of(start: int, end: int):
            examples = (
                grain.MapDataset.source(self.eval_source)[start:end]
                .map(augment.CentredCrop(crop_size))
                .map_with_index(lambda i, example: {**example, "index": np.int32(start + i)})
            )
            return examples.batch(per_process_batch, drop_remainder=False).to_iter_dataset()

        empty = {
            "image": np.zeros((0, *crop_size, self.cache.preprocessing.channels), np.float32),
            "label": np.zeros((0,), np.int32),
            "index": np.zeros((0,), np.int32),
        }
        return loading.sharded_eval_batches(
            len(self.eval_source),
            batches_of,
            empty=empty,
            per_process_batch=per_process_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def loss(self, outputs, batch):
        return losses.classification_loss(outputs, batch["label"], self.config.optimizer.label_smoothing)

    def eval_metrics(self, outputs, batch):
        """Per-example class probabilities with their labels and mask (reduced on the host by `evaluate`)."""
        return {"probs": jax.nn.softmax(outputs), "label": batch["label"], "index": batch["index"], "mask": batch["mask"]}

    def evaluate(self, state, mesh) -> dict[str, float]:
        gathered: dict[str, list[np.ndarray]] = {"probs": [], "label": [], "index": []}
        for out in self.eval_outputs(state, mesh):
            rows = loading.unpadded(out)
            for key, values in gathered.items():
                values.append(rows[key])
        order = np.argsort(np.concatenate(gathered["index"]))  # back to manifest order, whatever the process layout
        probs, labels = np.concatenate(gathered["probs"])[order], np.concatenate(gathered["label"])[order]
        result = metrics.classification_metrics(probs, labels, self.class_names)
        if self.config.eval.tuned_threshold:
            result.update(metrics.tuned_threshold_metrics(probs, labels))
        if self.writes_outputs:
            rows = [(row.image, row.where) for row in self.eval_rows]
            outputs.write_classification_results(self.output_dir, rows, probs, labels, result, self.class_names)
        return result

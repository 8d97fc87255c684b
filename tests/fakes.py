"""An in-memory image classification task for loop and step tests (no TFDS needed)."""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vdt_jax.data.images import DatasetInfo
from vdt_jax.pretrain.vdt_classification import VDTClassificationTask
from vdt_jax.train.task import Task


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    import configs.default

    config = configs.default.get_config()
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 3
    config.model.widths = (8, 8, 16, 16)
    config.data.image_size = 16
    config.optimizer.warmup_epochs = 0.0
    return override(config, **overrides)


def override(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """Set dotted fields in place, e.g. override(config, **{"model.depth": 18}); returns the config."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


class ArrayTask(VDTClassificationTask):
    """The pre-training task on random in-memory images; data through a real grain pipeline."""

    def __init__(self, config: ml_collections.ConfigDict, num_examples: int = 64, num_eval: int = 21, num_classes: int = 4):
        Task.__init__(self, config)
        rng = np.random.default_rng(0)
        size = config.data.image_size
        self.images = rng.integers(0, 256, (num_examples + num_eval, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, num_classes, num_examples + num_eval).astype(np.int32)
        self.num_train = num_examples
        self.num_classes = num_classes
        self.info = DatasetInfo(num_classes, num_examples, num_eval, tuple(f"class_{i}" for i in range(num_classes)))

    def build_model(self):
        from vdt_jax.models.factory import build_model

        return build_model(self.config.model, num_classes=self.num_classes)

    @property
    def num_train_examples(self) -> int:
        return self.num_train

    def train_iterator(self, *, seed: int, per_process_batch: int):
        records = [{"image": self.images[i], "label": self.labels[i]} for i in range(self.num_train)]
        ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat().batch(per_process_batch, drop_remainder=True)
        return iter(ds.to_iter_dataset())

    def eval_batches(self, *, per_process_batch: int):
        images, labels = self.images[self.num_train :], self.labels[self.num_train :]
        for start in range(0, len(images), per_process_batch):
            chunk = slice(start, start + per_process_batch)
            n = len(images[chunk])
            pad = per_process_batch - n
            yield {
                "image": np.concatenate([images[chunk], np.zeros((pad, *images.shape[1:]), np.uint8)]),
                "label": np.concatenate([labels[chunk], np.zeros(pad, np.int32)]),
                "mask": np.arange(per_process_batch) < n,
            }


def random_variables(model, input_shape, seed: int = 0) -> dict:
    """The model's variables filled with random numbers, BatchNorm statistics included (no compile).

    Fresh initialisations have zero residual scales, unit variances and zero
    means, which would hide layout mistakes in conversion tests.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(leaf.shape[:-1])))
        low, high = {"scale": (0.5, 1.5), "var": (0.5, 2.0)}.get(name, (-0.2, 0.2))
        return (low + (high - low) * rng.random(leaf.shape, np.float32)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)

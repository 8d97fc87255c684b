"""Input pipelines: datasets (TFDS + ArrayRecord), host transforms, grain loaders.

  pipeline.py      what the training loop calls: prepare_dataset, dataset_info,
                   train_loader, eval_batches
  transforms.py    decode / RandomResizedCrop / flip / eval resize-crop as grain transforms
  image_ops.py     the image operations themselves (PIL or OpenCV; no grain, no TFDS)
  shapes.py        the built-in generated `vdt_shapes` TFDS dataset
  fake_imagenet.py a miniature ImageNet in the real tar layout, for tests

The pipeline names below are imported on first use, so `vdt_jax.data.image_ops`
imports on machines without grain or TFDS (the benchmark's host timing).
"""

import importlib

__all__ = ["DatasetInfo", "dataset_info", "eval_batches", "prepare_dataset", "train_loader"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("vdt_jax.data.pipeline"), name)
    raise AttributeError(f"module 'vdt_jax.data' has no attribute {name!r}")

"""Input pipelines: datasets (TFDS + ArrayRecord), host transforms, grain loaders.

  pipeline.py      what the training loop calls: prepare_dataset, dataset_info,
                   train_loader, eval_batches
  transforms.py    decode / RandomResizedCrop / flip / eval resize-crop (numpy, PIL)
  shapes.py        the built-in generated `vdt_shapes` TFDS dataset
  fake_imagenet.py a miniature ImageNet in the real tar layout, for tests
"""

from vdt_jax.data.pipeline import DatasetInfo, dataset_info, eval_batches, prepare_dataset, train_loader

__all__ = ["DatasetInfo", "dataset_info", "eval_batches", "prepare_dataset", "train_loader"]

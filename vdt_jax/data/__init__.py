"""Input pipelines: datasets, host transforms, grain loaders.

  loading.py       how every task batches, shards and pads: the one grain
                   train loader, the per-process eval shard, pad-and-mask
  images.py        pre-training image datasets (TFDS, ArrayRecord):
                   prepare_dataset, dataset_info, train_loader, eval_batches
  workers.py       grain worker processes: ignore SIGTERM, exit with their parent
  transforms.py    decode / RandomResizedCrop / flip / eval resize-crop as grain transforms
  image_ops.py     the image operations themselves (PIL or OpenCV; no grain, no TFDS)
  tfds_datasets.py preparing and describing a TFDS dataset on disk (TFDS only, no JAX)
  shapes.py        the built-in generated `vdt_shapes` TFDS dataset
  fake_imagenet.py a miniature ImageNet in the real tar layout, for tests
  ct_slices.py     adjacent CT slices windowed for the pseudo-3D detector (DeepLesion)

This file imports nothing, so `vdt_jax.data.image_ops` imports on machines
without grain or TFDS (the benchmark's host timing). The fine-tuning volume
pipelines (NIfTI) live in `vdt_jax.finetune`.
"""

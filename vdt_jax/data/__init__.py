"""Input pipelines: datasets, host transforms, grain loaders.

  loading.py       how every task batches, shards and pads: the one grain
                   train loader, the per-process eval shard, pad-and-mask
  images.py        pre-training image datasets (TFDS, ArrayRecord):
                   prepare_dataset, dataset_info, train_loader, eval_batches
  transforms.py    decode / RandomResizedCrop / flip / eval resize-crop (numpy, PIL)
  shapes.py        the built-in generated `vdt_shapes` TFDS dataset
  fake_imagenet.py a miniature ImageNet in the real tar layout, for tests
  ct_slices.py     adjacent CT slices windowed for the pseudo-3D detector (DeepLesion)

The fine-tuning volume pipelines (NIfTI) live in `vdt_jax.finetune`.
"""

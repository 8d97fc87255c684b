"""Weights in and out: PyTorch state dicts, weight files, and starting a model from pre-trained weights.

  keys.py        Flax variables <-> torchvision-style PyTorch keys and layouts;
                 `to_torch_state_dict`, key styles (plain, monai, mmcls, medicalnet)
  files.py       read/write `.safetensors` (no PyTorch) and `.pth` files, safely
  load.py        `from_torch_state_dict`: fill a model's variables, checking every
                 tensor; `LoadReport`, the one report of what was loaded
  pretrained.py  fine-tune surgery: `initial_variables(init_from, template)` from a
                 vdt-jax run or a weight file, and `trainable_mask` for frozen stages
  monai_code.py  the MONAI code that rebuilds an exported model
  p3d_keys.py    P3D / MP3D variables <-> the P3D reference's keys (mp3d, mmcls styles);
                 `load.py` takes its names whenever the model is a pseudo-3D network
  unet_keys.py   the whole-UNet export: its keys and the code that rebuilds it
  torch_unet.py  `TorchUNet3D`, the UNet in plain PyTorch (imports torch: the `torch` extra)

The command line is `python -m vdt_jax.export`.
"""

"""Use a fine-tuned model on new volumes: `python -m vdt_jax.predict`.

    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --input=scans/ --out=predictions/

Modules:
  __main__     the command line
  loaded_run   a fine-tuning run's checkpoint, config, classes and model card, checked together
  inputs       what --input names (file, folder, glob, manifest) and the volumes read from it
  model_step   the run's network in the same jitted eval step as training's evaluation (+ flip TTA)
  segment      segmentation: sliding windows, NIfTI labels (and probabilities, PNGs) per case
  classify     classification: a CSV of class probabilities per volume or manifest row
"""

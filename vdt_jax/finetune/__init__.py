"""Fine-tuning on 3D medical volumes: classification and segmentation from NIfTI files.

    python -m vdt_jax.finetune                     # the demo (configs/finetune_default.py)
    python -m vdt_jax.finetune.sweep               # label efficiency: pre-trained vs scratch

Modules: `nifti` (reading, checks, orientation, writing), `datasets`
(manifests, dataset.json, the preprocessing cache, grain sources), `augment`,
`sliding_window`, `metrics`, `figures`, `synthetic` (generated demo data),
`tasks` (the two `Task`s the shared training loop runs) and `sweep`.
"""

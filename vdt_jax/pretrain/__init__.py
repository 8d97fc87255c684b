"""Supervised 3D pre-training with the variable dimension transform.

    python -m vdt_jax.pretrain          # the entry point (`__main__.py`)

Modules: `vdt_classification` (the pre-training `Task`: images from
`vdt_jax.data.images`, the VDT inside the jitted step, cross-entropy with label
smoothing, top-1/top-5 evaluation) and `__main__` (the command line).
"""

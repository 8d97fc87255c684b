r"""Peak host memory and time of `python -m vdt_jax.predict` on a full-size CT.

    python -m vdt_jax.benchmark.predict_memory                       # 512x512x300, 14 classes
    python -m vdt_jax.benchmark.predict_memory --shape=512,512,300 --classes=14 --spacing=0.8,0.8,1.5
    python -m vdt_jax.benchmark.predict_memory --widths=4,4,8,8        # same memory path, far less CPU time

Writes (into --folder, default a temporary one) an int16 CT with HU scaling of
the given shape and spacing, and a workdir holding an untrained UNet of the
fine-tuning demo config (configs/finetune_default.py, its preprocessing and
sliding window; `--widths` narrows it) with `--classes` classes, saved as the training loop saves
checkpoints; then runs the predict command on the CT in a child process and
prints the child's peak resident memory (ru_maxrss) and wall time, next to
what the float64 full-volume accumulation predict replaced would have held.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from vdt_jax import entrypoint

_SHAPE = flags.DEFINE_list("shape", ["512", "512", "300"], "CT size (x, y, z) in voxels.")
_SPACING = flags.DEFINE_list("spacing", ["0.8", "0.8", "1.5"], "CT voxel size (x, y, z) in mm.")
_CLASSES = flags.DEFINE_integer("classes", 14, "Output classes of the UNet (BCV: 13 organs + background).")
_WIDTHS = flags.DEFINE_list(
    "widths", None, "UNet encoder widths (default the demo config's); narrower ones cut CPU time, not host memory."
)
_FOLDER = flags.DEFINE_string("folder", None, "Where the CT, the workdir and the predictions go (default: a temporary folder).")


def write_ct(path: str, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """An int16 CT (HU + 1024, scl_inter -1024): air, a body ellipse of soft tissue, noise."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    raw = np.empty(shape, np.int16)
    for z in range(shape[2]):  # slice by slice: the writer itself stays small
        hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, shape[:2])
        raw[:, :, z] = np.round(hu + 1024).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(1.0, -1024.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


def write_workdir(workdir: str, classes: int, widths: tuple[int, ...] | None) -> None:
    """An untrained demo-config UNet saved as the training loop saves it (checkpoint, config.json, model card)."""
    import grain
    import jax
    import jax.numpy as jnp
    import optax

    import configs.finetune_default
    from vdt_jax import checkpointing, model_card
    from vdt_jax.finetune import contract
    from vdt_jax.models.unet3d import build_unet
    from vdt_jax.train import state as state_lib
    from vdt_jax.train.mesh import make_mesh

    config = configs.finetune_default.get_config("segmentation")
    config.data.synthetic = ""
    config.data.class_names = ("background", *[f"organ_{i}" for i in range(1, classes)])
    if widths:
        config.model.widths = widths
    model = build_unet(config.model, config.unet, classes)
    example = jnp.zeros((1, *config.data.crop_size, 1))
    state = state_lib.create_train_state(model, optax.identity(), example, jax.random.key(0), make_mesh())
    checkpointer = checkpointing.Checkpointer(workdir, every_steps=1, keep=1, async_save=False)
    checkpointer.save(1, state, iter(grain.MapDataset.range(1).to_iter_dataset()), config, force=True)
    checkpointer.close()
    model_card.write_run_card(
        workdir, contract.card_fields(config, config.data.class_names, workdir), step=1, evaluation=None,
        num_parameters=state_lib.count_params(state.params),
    )
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json())


def float64_stitcher_bytes(workdir: str, ct: str) -> tuple[tuple[int, ...], int]:
    """(model-space shape, bytes) the replaced float64 accumulation held for this CT: sums per class + weights."""
    from vdt_jax.finetune import nifti
    from vdt_jax.predict.loaded_run import load_run

    run = load_run(workdir)
    geometry = nifti.read_geometry(ct, target_spacing=run.preprocessing.target_spacing)
    padded = [max(s, w) for s, w in zip(geometry.model_shape, run.config.eval.window)]
    return geometry.model_shape, int(np.prod(padded)) * (len(run.class_names) + 1) * 8


def main(argv) -> None:
    del argv
    folder = _FOLDER.value or tempfile.mkdtemp(prefix="predict_memory_")
    os.makedirs(folder, exist_ok=True)
    shape = tuple(int(s) for s in _SHAPE.value)
    spacing = tuple(float(s) for s in _SPACING.value)
    ct, workdir = os.path.join(folder, "ct.nii.gz"), os.path.join(folder, "workdir")
    if not os.path.exists(ct):
        write_ct(ct, shape, spacing)
    if not os.path.exists(workdir):
        write_workdir(workdir, _CLASSES.value, tuple(int(w) for w in _WIDTHS.value or ()))
    model_shape, old_bytes = float64_stitcher_bytes(workdir, ct)
    command = [sys.executable, "-m", "vdt_jax.predict", f"--workdir={workdir}", f"--input={ct}", f"--out={folder}/out", "--overwrite"]
    start = time.perf_counter()
    completed = subprocess.run(command, check=False)  # its progress lines go straight to the terminal
    seconds = time.perf_counter() - start
    if completed.returncode:
        sys.exit(f"predict failed with exit status {completed.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
    print(
        f"CT {shape[0]}x{shape[1]}x{shape[2]} at {spacing} mm -> model space {model_shape}, {_CLASSES.value} classes\n"
        f"predict: peak resident memory {peak / 2**30:.2f} GiB, wall time {seconds:.1f} s (startup and compilation included)\n"
        f"the float64 full-volume stitcher it replaced held {old_bytes / 2**30:.2f} GiB for its sums alone"
    )


if __name__ == "__main__":
    entrypoint.run(main)

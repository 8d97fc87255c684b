r"""Predict with a fine-tuned model: segment or classify new NIfTI volumes.

    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --input=scans/ --out=predictions/ \
        [--step=N] [--batch_size=N] [--tta=flips] [--png] [--probabilities] [--overwrite] [--split=NAME]
    python -m vdt_jax.predict --workdir=workdirs/finetune_cls_demo --input=nodules.csv --out=cls/
    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --list_checkpoints

--input: a .nii/.nii.gz file, a folder of them, a glob (quoted) or a manifest
(CSV/JSON, see vdt_jax/predict/inputs.py). Everything about the model and its
preprocessing comes from the run (its checkpoint's config and model card).
Running the same command again skips the cases whose outputs are complete.
A mistake ends the command with one "error: ..." line naming the file, row or
flag, and exit status 2 (VDT_TRACEBACK=1 shows the traceback).
"""

from __future__ import annotations

from typing import Sequence

from absl import flags, logging

from vdt_jax import checkpoint_table, compile_cache, entrypoint
from vdt_jax.errors import UserError
from vdt_jax.predict import command, model_step

_WORKDIR = flags.DEFINE_string("workdir", None, "A fine-tuning workdir (python -m vdt_jax.finetune).")
_INPUT = flags.DEFINE_string("input", None, "A NIfTI file, a folder of them, a quoted glob, or a CSV/JSON manifest.")
_OUT = flags.DEFINE_string("out", None, "Output folder (created if needed).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to use; the latest when unset.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Windows or crops per step over all devices; default the run's eval_batch_size.")
_TTA = flags.DEFINE_enum("tta", "none", model_step.TTA_CHOICES, "Test-time augmentation: flips averages mirrored predictions.")
_PNG = flags.DEFINE_bool("png", False, "Segmentation: also write a PNG of axial slices with the prediction overlaid.")
_PROBABILITIES = flags.DEFINE_bool("probabilities", False, "Segmentation: also write class probabilities (4D NIfTI).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Redo cases whose outputs exist.")
_SPLIT = flags.DEFINE_string("split", None, "Manifest rows of this split only (a CSV 'split' column or a JSON list).")
_LIST = flags.DEFINE_bool("list_checkpoints", False, "List the workdir's checkpoints (step, time, metrics) and exit.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax warns about read-only restores; --verbosity=0 shows all
    if _LIST.value:
        print(checkpoint_table.format_table(_WORKDIR.value))
        return
    if not _INPUT.value or not _OUT.value:
        raise UserError("--input and --out are required (or --list_checkpoints)")
    command.predict(
        _WORKDIR.value,
        _INPUT.value,
        _OUT.value,
        step=_STEP.value,
        batch_size=_BATCH_SIZE.value,
        tta=_TTA.value,
        png=_PNG.value,
        probabilities=_PROBABILITIES.value,
        overwrite=_OVERWRITE.value,
        split=_SPLIT.value,
        after_checks=compile_cache.enable_from_flags,  # the cheap checks passed: JAX may compile now
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    entrypoint.run(main)

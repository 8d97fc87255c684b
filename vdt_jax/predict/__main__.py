r"""Predict with a fine-tuned model: segment or classify new NIfTI volumes.

    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --input=scans/ --out=predictions/
    python -m vdt_jax.predict --workdir=workdirs/finetune_cls_demo --input=nodules.csv --out=cls/
    python -m vdt_jax.predict --workdir=workdirs/finetune_demo --list_checkpoints

--input: a .nii/.nii.gz file, a folder of them, a glob (quoted) or a manifest
(CSV/JSON, see vdt_jax/predict/inputs.py). Everything about the model and its
preprocessing comes from the run (its checkpoint's config and model card).
Running the same command again skips the cases whose outputs are complete.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app, flags, logging

from vdt_jax import checkpoint_table
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
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax warns about read-only restores; --verbosity=0 shows all
    if _LIST.value:
        print(checkpoint_table.format_table(_WORKDIR.value))
        return
    if not _INPUT.value or not _OUT.value:
        raise app.UsageError("--input and --out are required (or --list_checkpoints)")
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
    )


def run(argv: Sequence[str]) -> None:
    """`main`, printing a user mistake as one `error: ...` line (exit status 2).

    TODO(lead): replace with the shared wrapper of vdt_jax/entrypoint.py (issue 11) when it lands.
    """
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(run)

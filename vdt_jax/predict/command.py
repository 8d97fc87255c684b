"""`predict(...)`: what `python -m vdt_jax.predict` does, callable from Python.

Order of work: cheap checks first (the checkpoint step, the inputs, every
input's header), then the weights and the model card check, then compilation,
then the volumes one by one. A case whose outputs are complete is skipped.
`--out` records in predict_info.json which run, step and TTA made its files, and
refuses to mix in outputs of another (unless `overwrite`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

from vdt_jax import checkpoint_table, model_card
from vdt_jax.atomic import write_text_atomic
from vdt_jax.errors import UserError
from vdt_jax.predict import inputs, model_step
from vdt_jax.predict.loaded_run import LoadedRun, load_run

INFO_NAME = "predict_info.json"
Log = Callable[[str], None]


def predict(
    workdir: str,
    input_spec: str,
    out: str,
    *,
    step: int | None = None,
    batch_size: int | None = None,
    tta: str = "none",
    png: bool = False,
    probabilities: bool = False,
    overwrite: bool = False,
    split: str | None = None,
    log: Log = print,
    after_checks: Callable[[], object] | None = None,
) -> str:
    """Segment or classify the volumes `input_spec` names with `workdir`'s model; returns a one-line summary.

    Args:
      workdir: a fine-tuning run's workdir.
      input_spec: a NIfTI file, folder, glob or manifest (`vdt_jax.predict.inputs`).
      out: the output folder.
      step: checkpoint step (default the latest).
      batch_size: windows / crops per step over all devices (default the run's eval_batch_size).
      tta: "none" or "flips".
      png, probabilities: segmentation extras.
      overwrite: redo complete cases.
      split: manifest rows of this split only.
      log: where progress lines go.
      after_checks: called once the cheap checks (step, inputs) passed, before JAX loads the
        weights (the command enables its compilation cache there).

    Raises:
      UserError: naming the file, row or setting that is wrong.
    """
    start = time.perf_counter()
    checkpoint_table.resolve_step(workdir, step)  # cheap checks first
    items = inputs.resolve_inputs(input_spec, split)
    if after_checks is not None:
        after_checks()
    run = load_run(workdir, step)
    card = f"model card {run.card_path}" if run.card_path else "no model card: the checkpoint's config"
    log(f"{run.workdir} step {run.step}: {run.task}, classes {', '.join(run.class_names)} ({card})")
    if tta not in model_step.TTA_CHOICES:
        raise UserError(f"--tta={tta}: expected one of {model_step.TTA_CHOICES}")
    options = _Options(os.path.abspath(out), batch_size or int(run.config.eval_batch_size), tta, png, probabilities, overwrite, log)
    _check_info(run, options)
    done = _segment(run, items, options) if run.task == "segmentation" else _classify(run, items, options)
    summary = f"Done: {done} in {time.perf_counter() - start:.1f} s; outputs in {options.out}"
    log(summary)
    return summary


def _segment(run: LoadedRun, items: list[inputs.InputItem], options: "_Options") -> str:
    from vdt_jax.predict import segment

    names = segment.output_names(items)
    request = segment.Request(options.out, options.probabilities, options.png, options.overwrite)
    volumes = [inputs.InputVolume(item, run.preprocessing) for item in items]  # every header checked now
    todo = [(v, n) for v, n in dict(zip(names, zip(volumes, names))).values() if not request.complete(n)]
    for name in sorted(set(names) - {n for _, n in todo}):
        options.log(f"{name}: outputs complete, skipped (--overwrite redoes it)")
    if not todo:
        return "nothing to do"
    step = model_step.PredictionStep(run, options.batch_size, options.tta)
    segment.segment(run, [v for v, _ in todo], [n for _, n in todo], step, request, options.log)
    return f"{len(todo)} case(s) segmented"


def _classify(run: LoadedRun, items: list[inputs.InputItem], options: "_Options") -> str:
    from vdt_jax.predict import classify

    volumes: dict[str, inputs.InputVolume] = {}
    for item in items:  # every header checked now
        if item.image not in volumes:
            volumes[item.image] = inputs.InputVolume(item, run.preprocessing)
    if os.path.exists(os.path.join(options.out, classify.CSV_NAME)) and not options.overwrite:
        options.log(f"{os.path.join(options.out, classify.CSV_NAME)} exists: skipped (--overwrite redoes it)")
        return "nothing to do"
    step = model_step.PredictionStep(run, options.batch_size, options.tta)
    classify.classify(run, items, volumes, step, options.out, options.log)
    return f"{len(items)} crop(s) classified"


def _check_info(run: LoadedRun, options: "_Options") -> None:
    """Refuse to mix outputs of another run, step or TTA setting in --out (unless --overwrite); record this one's."""
    path = os.path.join(options.out, INFO_NAME)
    info = {"workdir": run.workdir, "step": run.step, "tta": options.tta, "class_names": list(run.class_names)}
    if os.path.exists(path) and not options.overwrite:
        with open(path) as f:
            previous = {k: v for k, v in json.load(f).items() if k in info}
        if previous == info:
            return
        raise UserError(
            f"{path}: --out holds outputs of {previous.get('workdir')} step {previous.get('step')} "
            f"(tta {previous.get('tta')}), not of {run.workdir} step {run.step} (tta {options.tta}); "
            "use another --out, or --overwrite to redo every case"
        )
    write_text_atomic(path, json.dumps({**info, "date": model_card.now()}, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class _Options:
    out: str
    batch_size: int
    tta: str
    png: bool
    probabilities: bool
    overwrite: bool
    log: Log

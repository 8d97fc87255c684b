"""Classify new volumes with a fine-tuned 3D ResNet: class probabilities per volume or per manifest row.

Each row's crop is cut exactly as training's evaluation cuts it (the run's
`data.crop_size` around the row's x, y, z in world millimetres, or around the
volume centre; `volume_cache.ClassificationSource` and `augment.CentredCrop`),
from the volume preprocessed with the run's own preprocessing. Output:
`<out>/predictions.csv` with image, where, x, y, z, predicted class and one
probability column per class, in input order, written atomically.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import numpy as np

from vdt_jax.atomic import write_text_atomic
from vdt_jax.data import loading
from vdt_jax.finetune import augment, outputs
from vdt_jax.finetune.manifests import Row
from vdt_jax.finetune.volume_cache import ClassificationSource
from vdt_jax.predict.inputs import InputItem, InputVolume
from vdt_jax.predict.loaded_run import LoadedRun
from vdt_jax.predict.model_step import PredictionStep

CSV_NAME = "predictions.csv"


def classify(run: LoadedRun, items: list[InputItem], volumes: dict[str, InputVolume], step: PredictionStep, out_dir: str,
             log: Callable[[str], None] = print) -> str:
    """Write `<out_dir>/predictions.csv`: the class probabilities of every item, in order; returns its path.

    Args:
      run: the loaded classification run.
      items: the rows (a volume, and a crop centre or None).
      volumes: each item's image path -> its volume (headers checked, voxels not read yet).
      step: the eval step (its batch size and TTA).
      out_dir: the output folder.
      log: where progress lines go.
    """
    path = os.path.join(out_dir, CSV_NAME)
    rows = [Row(item.image, 0, "test", item.centre, item.where) for item in items]
    source = ClassificationSource(rows, [volumes[item.image] for item in items], "predict")
    crop_size = tuple(run.config.data.crop_size)
    empty = {"image": np.zeros((0, *crop_size, run.preprocessing.channels), np.float32), "index": np.zeros((0,), np.int32)}
    log(f"Compiled the network for {step.per_process_batch} crops per step in {step.compile(empty):.1f} s.")
    start = time.perf_counter()
    gathered = []
    for out in step.outputs(_batches(source, items, volumes, crop_size, empty, step.per_process_batch)):
        gathered.append(loading.unpadded(out))
    probs = np.concatenate([g["probs"] for g in gathered])[np.argsort(np.concatenate([g["index"] for g in gathered]))]
    write_text_atomic(path, outputs.csv_text(_table(items, probs, run.class_names)))
    log(f"{len(items)} crop(s) of {len(volumes)} volume(s) in {time.perf_counter() - start:.1f} s -> {path}")
    return path


def _batches(source, items, volumes, crop_size, empty, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Crops in input order, `batch_size` at a time (the last padded); a volume is freed after its last row."""
    crop = augment.CentredCrop(crop_size)
    last_row = {item.image: index for index, item in enumerate(items)}
    rows: list[dict[str, np.ndarray]] = []
    for index, item in enumerate(items):
        rows.append({"image": crop.map(source[index])["image"], "index": np.int32(index)})
        if last_row[item.image] == index:
            volumes[item.image].release()
        if len(rows) == batch_size:
            yield loading.pad_batch(_stack(rows, empty), batch_size)
            rows = []
    if rows:
        yield loading.pad_batch(_stack(rows, empty), batch_size)


def _stack(rows: list[dict[str, np.ndarray]], empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.stack([row[key] for row in rows]).astype(empty[key].dtype) for key in empty}


def _table(items: list[InputItem], probs: np.ndarray, class_names) -> list[list[object]]:
    lines: list[list[object]] = [["image", "where", "x", "y", "z", "prediction", "predicted_class", *[f"p_{n}" for n in class_names]]]
    for item, p in zip(items, probs):
        centre = [f"{v:g}" for v in item.centre] if item.centre is not None else ["", "", ""]
        lines.append([item.image, item.where, *centre, int(p.argmax()), class_names[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return lines

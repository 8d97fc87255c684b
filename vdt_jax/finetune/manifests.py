"""Fine-tuning data lists: classification manifests, Decathlon dataset.json files, and seeded subsets.

Classification manifest (CSV or JSON), one row per example:

    image,label,split,x,y,z
    volumes/case_001.nii.gz,1,train,-31.5,12.0,-140.25
    patches/p_0042.nii.gz,0,val,,,

  image   NIfTI path, relative to the manifest's folder (or absolute)
  label   integer class in [0, number of classes)
  split   "train", "val"/"validation" or "test" (the config picks which to use)
  x,y,z   optional crop centre in world (RAS) millimetres, as the file's
          affine maps voxels; empty means the volume centre (pre-cut patches)

  JSON: a list of such row objects, or {"classes": [...], "rows": [...]}, or
  {"classes": [...], "train": [...], "val": [...]} with rows per split.

Segmentation: a Medical Segmentation Decathlon `dataset.json`:

    {"labels": {"0": "background", "1": "liver", ...},   (or {"background": 0, ...})
     "training":   [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, ...],
     "validation": [...]}                                  (optional, as in UNETR's BCV split)

  Without the evaluation key, a seeded `data.num_val_cases` of the training
  cases are held out.

Every error names the file and the row or entry.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from vdt_jax.errors import ConfigError, UserError

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


class ManifestError(UserError, ValueError):
    """A manifest or dataset.json that cannot be used; the message names the file and row."""


# ------------------------------------------------------------ classification rows


@dataclasses.dataclass(frozen=True)
class Row:
    """One classification example."""

    image: str
    label: int
    split: str
    centre: tuple[float, float, float] | None  # world mm, or None for the volume centre
    where: str  # "manifest.csv line 7", for messages


def read_manifest(path: str, num_classes: int) -> list[Row]:
    """All rows of a CSV or JSON manifest, checked (see the module docstring).

    Raises:
      ManifestError: naming the file and row, for a missing manifest, missing
        columns, non-integer or out-of-range labels, unknown splits, partial
        centres; FileNotFoundError-style messages come later, per volume.
    """
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: manifest not found")
    base = os.path.dirname(os.path.abspath(path))
    records = _json_records(path) if path.lower().endswith(".json") else _csv_records(path)
    rows = [_row(record, where, base, num_classes) for record, where in records]
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    return rows


def _csv_records(path: str) -> list[tuple[dict, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(
                f"{path}: the header lacks column(s) {sorted(missing)}; found {reader.fieldnames}. "
                "Expected image,label,split[,x,y,z]"
            )
        name = os.path.basename(path)
        return [(record, f"{name} line {reader.line_num}") for record in reader]


def _json_records(path: str) -> list[tuple[dict, str]]:
    name = os.path.basename(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON: {error}") from error
    if isinstance(data, dict):
        if "rows" in data:
            data = data["rows"]
        else:
            data = [
                {"split": split, **row}
                for split, rows in data.items()
                if split != "classes" and isinstance(rows, list)
                for row in rows
            ]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ManifestError(f"{path}: expected a list of row objects, {{'rows': [...]}} or {{split: [rows]}}")
    return [(record, f"{name} row {i}") for i, record in enumerate(data)]


def _row(record: dict, where: str, base: str, num_classes: int) -> Row:
    image = str(record.get("image") or "").strip()
    if not image:
        raise ManifestError(f"{where}: empty 'image'")
    try:
        label = int(str(record.get("label", "")).strip())
    except ValueError:
        raise ManifestError(f"{where}: label {record.get('label')!r} is not an integer") from None
    if not 0 <= label < num_classes:
        raise ManifestError(f"{where}: label {label} is outside the {num_classes} declared classes [0, {num_classes - 1}]")
    split = SPLIT_ALIASES.get(str(record.get("split", "")).strip().lower())
    if split is None:
        raise ManifestError(f"{where}: unknown split {record.get('split')!r}; expected one of {sorted(SPLIT_ALIASES)}")
    values = [str(record.get(axis, "")).strip() for axis in ("x", "y", "z")]
    centre = None
    if any(values):
        try:
            centre = tuple(float(v) for v in values)
        except ValueError:
            raise ManifestError(f"{where}: the centre (x, y, z) = {values} needs three numbers, or none") from None
    return Row(os.path.normpath(os.path.join(base, image)), label, split, centre, where)


# ------------------------------------------------------------ segmentation cases


@dataclasses.dataclass(frozen=True)
class Case:
    """One segmentation example: an image and its label map."""

    image: str
    label: str
    where: str


def read_decathlon(
    path: str, *, train_key: str = "training", eval_key: str = "validation", num_val_cases: int = 0, seed: int = 0
) -> tuple[list[Case], list[Case], tuple[str, ...]]:
    """(training cases, evaluation cases, class names) of an MSD-style dataset.json.

    Raises:
      ManifestError: naming the file and entry, for a missing file, missing
        keys, entries without image or label, or non-contiguous label ids.
    """
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: dataset.json not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON: {error}") from error
    names = _label_names(data.get("labels"), path)
    if train_key not in data:
        raise ManifestError(f"{path}: no {train_key!r} list (data.train_key); keys: {sorted(data)}")
    base = os.path.dirname(os.path.abspath(path))
    train = [_case(entry, f"{os.path.basename(path)} {train_key}[{i}]", base) for i, entry in enumerate(data[train_key])]
    if eval_key in data:
        val = [_case(entry, f"{os.path.basename(path)} {eval_key}[{i}]", base) for i, entry in enumerate(data[eval_key])]
    elif num_val_cases > 0:
        order = np.random.default_rng(seed).permutation(len(train))
        held = set(order[:num_val_cases].tolist())
        val = [c for i, c in enumerate(train) if i in held]
        train = [c for i, c in enumerate(train) if i not in held]
    else:
        raise ManifestError(f"{path}: no {eval_key!r} list (data.eval_key); set data.num_val_cases to hold out training cases")
    if not train or not val:
        raise ManifestError(f"{path}: needs at least one training and one evaluation case (got {len(train)}, {len(val)})")
    return train, val, names


def _label_names(labels: Any, path: str) -> tuple[str, ...]:
    if not isinstance(labels, dict) or not labels:
        raise ManifestError(f"{path}: 'labels' must map label ids to names, e.g. {{\"0\": \"background\", \"1\": \"liver\"}}")
    try:
        if all(str(k).strip().isdigit() for k in labels):
            by_id = {int(k): str(v) for k, v in labels.items()}
        else:  # MSD v2 style: {"background": 0, "liver": 1}
            by_id = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise ManifestError(f"{path}: 'labels' must map integer ids to names; got {labels}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise ManifestError(f"{path}: label ids must be 0..{len(by_id) - 1}; got {sorted(by_id)}")
    return tuple(by_id[i] for i in range(len(by_id)))


def _case(entry: Any, where: str, base: str) -> Case:
    if not isinstance(entry, dict) or not entry.get("image") or not entry.get("label"):
        raise ManifestError(f"{where}: expected {{\"image\": ..., \"label\": ...}}, got {entry!r}")
    return Case(os.path.normpath(os.path.join(base, entry["image"])), os.path.normpath(os.path.join(base, entry["label"])), where)


# --------------------------------------------------------------------- subsets


def select_fraction(items: Sequence[Any], fraction: float, seed: int, strata: Sequence[int] | None = None) -> list[Any]:
    """A seeded subset holding `fraction` of `items` (at least one per stratum), in the original order.

    With `strata` (e.g. class labels) each stratum keeps round(fraction * n)
    items, at least one. For one seed, a smaller fraction's subset is contained
    in a larger one's, so a label-efficiency curve adds data rather than
    swapping it.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"data.train_fraction must be in (0, 1], got {fraction}")
    strata = [0] * len(items) if strata is None else list(strata)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for stratum in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == stratum]
        order = rng.permutation(len(members))
        count = max(1, int(round(fraction * len(members))))
        keep += [members[j] for j in order[:count]]
    return [items[i] for i in sorted(keep)]

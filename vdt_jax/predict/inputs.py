"""What `--input` names: a NIfTI file, a folder of them, a glob, or a manifest; and the volumes `predict` loads.

  file      one .nii / .nii.gz volume
  folder    every .nii / .nii.gz file directly inside it, sorted by name
  glob      e.g. "scans/*_0000.nii.gz" (quote it), sorted
  manifest  a CSV with an `image` column and optionally `x,y,z` (a crop centre in
            world millimetres, classification) and `split`; or a JSON list of
            such rows (or of paths), or an object of lists (e.g. a Decathlon
            dataset.json: "training", "validation", "test"), one of which
            `--split` picks. Relative paths are relative to the manifest.

Every file's header is checked before any model runs (missing, not NIfTI,
dimensions, channels: `nifti.read_geometry`); voxels (NaN/inf) are checked as
each volume is loaded. Every error names the file (and the manifest row).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import time
from typing import Any

import numpy as np

from vdt_jax.errors import UserError
from vdt_jax.finetune import nifti
from vdt_jax.finetune.volume_cache import Preprocessing

GLOB_CHARACTERS = "*?["


class InputError(UserError, ValueError):
    """An --input that names no usable volumes; the message says which file or row."""


@dataclasses.dataclass(frozen=True)
class InputItem:
    """One volume to predict (classification: one crop of it)."""

    image: str  # absolute path
    centre: tuple[float, float, float] | None  # world (RAS) mm, or None for the volume centre
    where: str  # for messages: the path, or "manifest.csv line 3"


def resolve_inputs(spec: str, split: str | None = None) -> list[InputItem]:
    """The volumes `--input=spec` names, in order (see the module docstring)."""
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, n) for n in os.listdir(spec) if n.endswith(nifti.NIFTI_EXTENSIONS))
        if not paths:
            raise InputError(f"--input={spec}: the folder holds no .nii or .nii.gz files")
        return [InputItem(os.path.abspath(p), None, p) for p in paths]
    if any(c in spec for c in GLOB_CHARACTERS) and not os.path.exists(spec):
        paths = sorted(glob.glob(spec))
        if not paths:
            raise InputError(f"--input={spec}: the pattern matches no files")
        return [InputItem(os.path.abspath(p), None, p) for p in paths]
    if spec.lower().endswith(".csv"):
        return _csv_rows(spec, split)
    if spec.lower().endswith(".json"):
        return _json_rows(spec, split)
    nifti.check_exists(spec, "input file")
    return [InputItem(os.path.abspath(spec), None, spec)]


def _csv_rows(path: str, split: str | None) -> list[InputItem]:
    if not os.path.isfile(path):
        raise InputError(f"--input={path}: manifest not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "image" not in (reader.fieldnames or ()):
            raise InputError(f"{path}: a manifest needs an 'image' column; found {reader.fieldnames}")
        records = [(record, f"{os.path.basename(path)} line {reader.line_num}") for record in reader]
    if split is not None:
        records = [(r, where) for r, where in records if str(r.get("split", "")).strip() == split]
    return _items(records, path)


def _json_rows(path: str, split: str | None) -> list[InputItem]:
    if not os.path.isfile(path):
        raise InputError(f"--input={path}: manifest not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON: {error}") from error
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    if isinstance(data, dict):
        lists = {key: value for key, value in data.items() if isinstance(value, list)}
        if split is None and len(lists) != 1:
            raise InputError(f"{path}: holds the lists {sorted(lists)}; choose one with --split")
        key = split if split is not None else next(iter(lists))
        if key not in lists:
            raise InputError(f"{path}: no list {key!r} (--split); it holds {sorted(lists)}")
        data = lists[key]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of rows, {{'rows': [...]}} or an object of lists")
    records = [({"image": r} if isinstance(r, str) else r, f"{os.path.basename(path)} row {i}") for i, r in enumerate(data)]
    return _items(records, path)


def _items(records: list[tuple[Any, str]], path: str) -> list[InputItem]:
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for record, where in records:
        image = str(record.get("image") or "").strip() if isinstance(record, dict) else ""
        if not image:
            raise InputError(f"{where}: no 'image' path")
        values = [str(record.get(axis, "") or "").strip() for axis in ("x", "y", "z")]
        try:
            centre = tuple(float(v) for v in values) if any(values) else None
        except ValueError:
            raise InputError(f"{where}: the centre (x, y, z) = {values} needs three numbers, or none") from None
        items.append(InputItem(os.path.normpath(os.path.join(base, image)), centre, where))
    if not items:
        raise InputError(f"{path}: the manifest lists no volumes")
    return items


class InputVolume:
    """A volume `predict` reads: its geometry from the header at once, its voxels when first needed.

    `image()` preprocesses exactly as the run's training did (`nifti.load_image`
    with the run's `Preprocessing`), keeps the array until `release()`, and
    sets `pad_value` (the volume's minimum) as the preprocessing cache does.
    """

    def __init__(self, item: InputItem, preprocessing: Preprocessing):
        self.item = item
        self.preprocessing = preprocessing
        try:
            self.geometry = nifti.read_geometry(
                item.image, channels=preprocessing.channels, target_spacing=preprocessing.target_spacing
            )
        except nifti.NiftiError as error:
            raise nifti.NiftiError(f"{item.where}: {error}" if item.where != item.image else str(error)) from None
        self._array: np.ndarray | None = None
        self._pad_value: float | None = None
        self.started = 0.0  # when its voxels were first read (for the progress line's time)

    def image(self) -> np.ndarray:
        if self._array is None:
            self.started = self.started or time.perf_counter()
            p = self.preprocessing
            array, _ = nifti.load_image(self.item.image, channels=p.channels, target_spacing=p.target_spacing, intensity=p.intensity)
            self._array, self._pad_value = array.astype(np.float32, copy=False), float(array.min())
        return self._array

    @property
    def pad_value(self) -> float:
        if self._pad_value is None:
            self.image()
        return self._pad_value  # type: ignore[return-value]

    def release(self) -> None:
        self._array = None

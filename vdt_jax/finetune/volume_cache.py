"""The preprocessed-volume cache and the grain sources that read it.

Preprocessing (reorientation, resampling, intensities, checks; see
`vdt_jax.finetune.nifti`) runs once per file and is cached as .npy files that
the loaders memory-map, so a random crop reads only its own voxels and a
dataset larger than memory still trains. Every file is checked before training
starts, and every error names its file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import threading
from typing import Any, Sequence

import grain
import numpy as np

from vdt_jax.errors import ConfigError
from vdt_jax.finetune import nifti
from vdt_jax.finetune.manifests import Row

CACHE_VERSION = 1
MAX_FOREGROUND_SAMPLES = 20000  # voxel indices kept per class for foreground-centred crops


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What turns a NIfTI file into a model-space array; part of the cache key."""

    channels: int
    target_spacing: tuple[float, float, float] | None
    intensity: nifti.Intensity
    num_classes: int
    label_map: tuple[tuple[int, int], ...] = ()  # (file value, class) pairs applied first, e.g. ((2, 1),)

    @classmethod
    def from_config(cls, data_config: Any, num_classes: int) -> "Preprocessing":
        """From data.in_channels, target_spacing (() keeps each file's; a 0 entry keeps that axis), the intensity fields and label_map."""
        spacing = tuple(float(s) for s in data_config.target_spacing)
        if spacing and (len(spacing) != 3 or min(spacing) < 0 or max(spacing) == 0):
            raise ConfigError(
                f"data.target_spacing must be () or three (x, y, z) mm, each > 0 or 0 to keep that axis; got {spacing}"
            )
        return cls(
            channels=int(data_config.in_channels),
            target_spacing=spacing or None,
            intensity=nifti.Intensity.from_config(data_config),
            num_classes=num_classes,
            label_map=tuple((int(a), int(b)) for a, b in data_config.label_map),
        )


@dataclasses.dataclass(frozen=True)
class Volume:
    """A preprocessed volume in the cache; arrays open memory-mapped on demand."""

    folder: str
    geometry: nifti.Geometry
    pad_value: float  # the volume's minimum: what crops beyond its edge are filled with

    def image(self) -> np.ndarray:
        return _open(os.path.join(self.folder, "image.npy"))

    def label(self) -> np.ndarray:
        return _open(os.path.join(self.folder, "label.npy"))

    def label_at_source_resolution(self) -> np.ndarray:
        """The label map on the file's own (canonical) grid, where predictions are scored."""
        name = "label_source.npy" if os.path.exists(os.path.join(self.folder, "label_source.npy")) else "label.npy"
        return _open(os.path.join(self.folder, name))

    def foreground(self) -> list[np.ndarray]:
        return _open(os.path.join(self.folder, "foreground.npz"))


# np.load parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run
# in two threads at once ("AST constructor recursion depth mismatch"), and grain
# reads records from several threads: open each file once per process, serially.
_OPEN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _open(path: str) -> Any:
    """A read-only memory map of an .npy file, or the per-class arrays of a foreground .npz."""
    with _OPEN_LOCK:
        if path.endswith(".npz"):
            with np.load(path) as data:
                return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
        return np.load(path, mmap_mode="r")


class VolumeCache:
    """Preprocess NIfTI files once into `directory`, keyed by file identity and preprocessing."""

    def __init__(self, directory: str, preprocessing: Preprocessing):
        self.directory = os.path.abspath(directory)
        self.preprocessing = preprocessing

    def get(self, image_path: str, label_path: str | None = None) -> Volume:
        folder = os.path.join(self.directory, self._key(image_path, label_path))
        if not os.path.exists(os.path.join(folder, "meta.json")):
            self._write(folder, image_path, label_path)
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        return Volume(folder, nifti.Geometry.from_json(meta["geometry"]), meta["pad_value"])

    def _key(self, image_path: str, label_path: str | None) -> str:
        identity = [CACHE_VERSION, dataclasses.asdict(self.preprocessing)]
        for path in (image_path, label_path):
            if path is not None:
                nifti.check_exists(path, "NIfTI file")
                stat = os.stat(path)
                identity.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
        digest = hashlib.sha1(json.dumps(identity, default=str).encode()).hexdigest()[:16]
        return f"{os.path.basename(image_path).split('.')[0]}-{digest}"

    def _write(self, folder: str, image_path: str, label_path: str | None) -> None:
        p = self.preprocessing
        image, geometry = nifti.load_image(
            image_path, channels=p.channels, target_spacing=p.target_spacing, intensity=p.intensity
        )
        arrays = {"image.npy": image.astype(np.float32)}
        if label_path is not None:
            label, source_label = nifti.load_label(label_path, geometry, p.num_classes, dict(p.label_map))
            arrays["label.npy"] = label
            if label.shape != source_label.shape:
                arrays["label_source.npy"] = source_label
        staging = folder + f".tmp{os.getpid()}"
        os.makedirs(staging, exist_ok=True)
        for name, array in arrays.items():
            np.save(os.path.join(staging, name), array)
        foreground = _foreground_samples(arrays.get("label.npy"), p.num_classes)
        np.savez(os.path.join(staging, "foreground.npz"), **foreground)
        meta = {"geometry": geometry.to_json(), "pad_value": float(image.min()), "source": [image_path, label_path]}
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump(meta, f)
        try:
            os.rename(staging, folder)  # atomic: a reader sees all files or none
        except OSError:
            if not os.path.exists(os.path.join(folder, "meta.json")):
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process finished first


def _foreground_samples(label: np.ndarray | None, num_classes: int) -> dict[str, np.ndarray]:
    """Up to MAX_FOREGROUND_SAMPLES voxel indices per foreground class (for foreground-centred crops)."""
    out = {}
    rng = np.random.default_rng(0)
    for c in range(1, num_classes):
        coords = np.argwhere(label == c).astype(np.int32) if label is not None else np.zeros((0, 3), np.int32)
        if len(coords) > MAX_FOREGROUND_SAMPLES:
            coords = coords[rng.choice(len(coords), MAX_FOREGROUND_SAMPLES, replace=False)]
        out[f"class_{c}"] = coords
    return out


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "vdt_jax", "preprocessed")


# ---------------------------------------------------------------- grain sources


class ClassificationSource(grain.sources.RandomAccessDataSource):
    """Rows -> {'volume' (memory-mapped), 'centre' (model-space index), 'pad_value', 'label'}."""

    def __init__(self, rows: Sequence[Row], volumes: Sequence[Volume], name: str):
        self._volumes = list(volumes)
        self._labels = [r.label for r in rows]
        self._centres = [
            nifti.world_to_model_index(r.centre, v.geometry) if r.centre is not None else (np.asarray(v.geometry.model_shape) - 1) / 2
            for r, v in zip(rows, volumes)
        ]
        self._name = name

    def __len__(self) -> int:
        return len(self._volumes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume = self._volumes[index]
        return {"volume": volume.image(), "centre": self._centres[index], "pad_value": volume.pad_value, "label": self._labels[index]}

    def __repr__(self) -> str:  # grain checks it on restore; no paths, so data may move
        return f"ClassificationSource({self._name!r}, num_records={len(self)})"


class SegmentationSource(grain.sources.RandomAccessDataSource):
    """Each case `samples_per_case` times -> {'volume', 'label_map' (memory-mapped), 'foreground', 'pad_value'}."""

    def __init__(self, volumes: Sequence[Volume], samples_per_case: int, name: str):
        self._volumes = list(volumes)
        self._samples = max(int(samples_per_case), 1)
        self._name = name

    def __len__(self) -> int:
        return len(self._volumes) * self._samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume = self._volumes[index // self._samples]
        return {
            "volume": volume.image(),
            "label_map": volume.label(),
            "foreground": volume.foreground(),
            "pad_value": volume.pad_value,
        }

    def __repr__(self) -> str:
        return f"SegmentationSource({self._name!r}, cases={len(self._volumes)}, samples_per_case={self._samples})"

"""Small synthetic CT datasets written as real NIfTI files, for the demo and the tests.

Two datasets, generated offline in seconds and cached on disk:

  segmentation  contrast-enhanced "abdomen" CTs in the Medical Segmentation
                Decathlon layout (dataset.json, imagesTr/, labelsTr/): air, a
                body with a fat rim, soft tissue, a spine, kidneys and bowel
                gas as distractors, and an organ (label 1, ~100 HU, irregular
                ellipsoid) holding 0-2 hypo-enhancing lesions (label 2,
                ~45 HU), plus CT-like noise.
  classification  chest CT chunks with one lung nodule each and a CSV
                manifest (image, label, split, and the nodule centre x, y, z
                in world millimetres): benign nodules (label 0) tend to be
                smaller, smoother and sometimes calcified, malignant ones
                (label 1) larger, lobulated and spiculated; the classes
                overlap, so the task is not trivial.

Headers look like scanner output: int16 voxels holding HU + 1024 with
scl_slope 1 / scl_inter -1024, anisotropic spacing (thin in-plane, thicker
slices), random origins, qform/sform set, and about half of the files stored in
LPS orientation (as DICOM converters write them) instead of RAS, holding the
same anatomy in world space. Label maps are uint8 on the same grid.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from vdt_jax.errors import ConfigError

VERSION = 2
DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "vdt_jax", f"synthetic_ct_v{VERSION}")
SEGMENTATION_LABELS = ("background", "organ", "lesion")
CLASSIFICATION_LABELS = ("benign", "malignant")
HU_OFFSET = 1024


def ensure_dataset(kind: str, root: str | None = None, **kwargs) -> str:
    """The path of the dataset's dataset.json / manifest.csv, generating it on first use.

    The dataset is written into a temporary folder and renamed into place, so
    a half-generated dataset is never used; later calls return at once.

    Args:
      kind: "segmentation" or "classification".
      root: parent folder; default ~/.cache/vdt_jax/synthetic_ct_v2.
      **kwargs: passed to the writer (num_train, num_val, shape, seed), and part
        of the folder name when not the defaults.
    """
    writers = {"segmentation": (write_segmentation_dataset, "dataset.json"), "classification": (write_classification_dataset, "manifest.csv")}
    if kind not in writers:
        raise ConfigError(f"unknown synthetic dataset {kind!r}; expected one of {sorted(writers)}")
    writer, index_file = writers[kind]
    suffix = "".join(f"_{k}{'x'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}" for k, v in sorted(kwargs.items()))
    folder = os.path.join(os.path.abspath(root or DEFAULT_ROOT), kind + suffix)
    if not os.path.exists(os.path.join(folder, index_file)):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{kind}-", dir=os.path.dirname(folder))
        try:
            writer(staging, **kwargs)
            os.rename(staging, folder)
        except OSError:
            if not os.path.exists(os.path.join(folder, index_file)):  # not a concurrent writer winning the race
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(folder, index_file)


# ------------------------------------------------------------------ NIfTI files


def ct_affine(spacing: Sequence[float], shape: Sequence[int], lps: bool, rng: np.random.Generator) -> np.ndarray:
    """A scanner-like affine: given spacing, random origin, RAS or LPS axes."""
    signs = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    affine = np.diag([*(signs * np.asarray(spacing, np.float64)), 1.0])
    centre_offset = rng.uniform(-40, 40, 3)
    # Put the volume's centre near world (0, 0, z0): origin = centre - R @ half extent.
    affine[:3, 3] = centre_offset - affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    return affine


def to_file_order(volume_xyz: np.ndarray, lps: bool) -> np.ndarray:
    """An array indexed in RAS order (x right, y anterior, z superior) -> LPS storage if asked."""
    return volume_xyz[::-1, ::-1] if lps else volume_xyz


def save_ct(path: str, hu_xyz: np.ndarray, affine: np.ndarray, lps: bool) -> None:
    raw = np.clip(np.round(hu_xyz) + HU_OFFSET, -32768, 32767).astype(np.int16)
    image = nib.Nifti1Image(to_file_order(raw, lps), affine)
    image.header.set_slope_inter(1.0, -float(HU_OFFSET))
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


def save_label(path: str, label_xyz: np.ndarray, affine: np.ndarray, lps: bool) -> None:
    image = nib.Nifti1Image(to_file_order(label_xyz.astype(np.uint8), lps), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


# ---------------------------------------------------------------------- anatomy


def smooth_noise(shape: Sequence[int], rng: np.random.Generator, scale: int = 4) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field: coarse noise upsampled."""
    coarse = rng.standard_normal([max(s // scale, 2) for s in shape])
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=3, grid_mode=True, mode="nearest")
    return field[: shape[0], : shape[1], : shape[2]]


def grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Voxel centre coordinates in mm relative to the volume centre, in RAS index order."""
    return [
        ((np.arange(n) - (n - 1) / 2) * s).reshape([-1 if i == axis else 1 for i in range(3)])
        for axis, (n, s) in enumerate(zip(shape, spacing))
    ]


def ct_noise(hu: np.ndarray, rng: np.random.Generator, sigma: float = 15.0) -> np.ndarray:
    return hu + ndimage.gaussian_filter(rng.normal(0, sigma * 1.6, hu.shape), 0.6)


def abdomen_case(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(HU, label) arrays in RAS index order for one synthetic contrast-enhanced abdominal CT."""
    x, y, z = grid_mm(shape, spacing)
    extent = np.asarray(shape) * np.asarray(spacing) / 2
    body_a, body_b = extent[0] * rng.uniform(0.78, 0.9), extent[1] * rng.uniform(0.62, 0.75)
    body = (x / body_a) ** 2 + (y / body_b) ** 2
    hu = np.full(shape, -1000.0)
    hu = np.where(body < 1.0, -100.0, hu)  # subcutaneous fat
    inside = body < 0.8
    hu = np.where(inside, 40.0 + 10 * smooth_noise(shape, rng), hu)  # muscle and bowel
    spine = (x / (0.14 * body_a)) ** 2 + ((y + 0.62 * body_b) / (0.14 * body_b)) ** 2 < 1.0
    hu = np.where(spine, 450.0, hu)
    for side in (-1, 1):  # kidneys: bright distractors beside the spine
        kidney = ((x - side * 0.45 * body_a) / (0.14 * body_a)) ** 2 + ((y + 0.35 * body_b) / (0.2 * body_b)) ** 2
        hu = np.where((kidney + (z / (0.6 * extent[2])) ** 2 < 1.0) & inside, 160.0, hu)
    for _ in range(rng.integers(2, 6)):  # bowel gas
        centre = rng.uniform(-0.5, 0.5, 3) * [body_a, body_b, extent[2]]
        gas = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 < rng.uniform(2.0, 5.0) ** 2
        hu = np.where(gas & inside, -900.0, hu)
    centre = np.array([rng.uniform(0.1, 0.35) * body_a, rng.uniform(-0.1, 0.25) * body_b, rng.uniform(-0.15, 0.15) * extent[2]])
    radii = np.array([rng.uniform(0.35, 0.5) * body_a, rng.uniform(0.35, 0.5) * body_b, rng.uniform(0.55, 0.8) * extent[2]])
    organ_field = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    organ = (organ_field + 0.25 * smooth_noise(shape, rng, scale=6) < 1.0) & inside & ~spine
    label = organ.astype(np.uint8)
    hu = np.where(organ, 100.0 + 6 * smooth_noise(shape, rng), hu)  # enhancing parenchyma
    for _ in range(rng.integers(0, 3)):
        voxels = np.argwhere(organ)
        if len(voxels) == 0:
            break
        point = voxels[rng.integers(len(voxels))]
        r = rng.uniform(3.0, 7.0)
        lesion = ((x - x.flat[point[0]]) ** 2 + (y - y.flat[point[1]]) ** 2 + (z - z.flat[point[2]]) ** 2 < r**2) & organ
        label[lesion] = 2
        hu = np.where(lesion, 45.0, hu)  # hypo-enhancing lesion
    return ct_noise(hu, rng, sigma=12.0), label


def nodule_case(
    shape: Sequence[int], spacing: Sequence[float], malignant: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(HU in RAS index order, nodule centre offset in mm from the volume centre) for a lung chunk."""
    x, y, z = grid_mm(shape, spacing)
    hu = -850.0 + 30 * smooth_noise(shape, rng, scale=3)
    for _ in range(rng.integers(3, 7)):  # vessels: random straight tubes of soft tissue
        point, direction = rng.uniform(-10, 10, 3), rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        d = np.stack(np.broadcast_arrays(x - point[0], y - point[1], z - point[2]), -1)
        distance = np.linalg.norm(d - (d @ direction)[..., None] * direction, axis=-1)
        hu = np.where(distance < rng.uniform(0.6, 1.6), 40.0, hu)
    centre = rng.uniform(-3.0, 3.0, 3)
    # The classes overlap in size and shape: only the tendencies differ, so more data keeps helping.
    r = rng.uniform(3.5, 7.5) if malignant else rng.uniform(3.0, 6.5)
    dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    irregularity = (0.3 if malignant else 0.08) * r * smooth_noise(shape, rng, scale=3)
    nodule = dist + irregularity < r
    hu = np.where(nodule, 30.0 + 10 * rng.standard_normal(), hu)
    spicules = rng.integers(1, 6) if malignant else (rng.integers(1, 3) if rng.random() < 0.15 else 0)
    for _ in range(spicules):  # thin spokes leaving the surface
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        d = np.stack(np.broadcast_arrays(x - centre[0], y - centre[1], z - centre[2]), -1)
        along = d @ direction
        off = np.linalg.norm(d - along[..., None] * direction, axis=-1)
        hu = np.where((along > 0) & (along < r + rng.uniform(1.5, 4.0)) & (off < 0.6), 10.0, hu)
    if not malignant and rng.random() < 0.3:  # central calcification
        hu = np.where(dist < 0.4 * r, 300.0, hu)
    return ct_noise(hu, rng, sigma=25.0), centre


# --------------------------------------------------------------------- datasets


def write_segmentation_dataset(
    folder: str, *, num_train: int = 24, num_val: int = 8, shape: Sequence[int] = (96, 96, 24), seed: int = 0
) -> None:
    """An MSD-style dataset with "training" and "validation" lists; spacing (0.9, 0.9, 2.5) mm."""
    spacing = (0.9, 0.9, 2.5)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    entries = []
    for index in range(num_train + num_val):
        rng = np.random.default_rng([seed, index])
        hu, label = abdomen_case(shape, spacing, rng)
        lps = bool(index % 2)
        affine = ct_affine(spacing, shape, lps, rng)
        name = f"case_{index:03d}.nii.gz"
        save_ct(os.path.join(folder, "imagesTr", name), hu, affine, lps)
        save_label(os.path.join(folder, "labelsTr", name), label, affine, lps)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "SyntheticAbdomenCT",
        "description": "Generated by vdt_jax.finetune.synthetic: an organ with lesions in CT-like noise",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(i): name for i, name in enumerate(SEGMENTATION_LABELS)},
        "numTraining": num_train,
        "training": entries[:num_train],
        "validation": entries[num_train:],
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset, f, indent=2)


def write_classification_dataset(
    folder: str, *, num_train: int = 128, num_val: int = 96, shape: Sequence[int] = (40, 40, 28), seed: int = 0
) -> None:
    """Nodule volumes and a manifest.csv (balanced classes); spacing (0.8, 0.8, 1.25) mm."""
    spacing = (0.8, 0.8, 1.25)
    os.makedirs(os.path.join(folder, "volumes"), exist_ok=True)
    rows = []
    for index in range(num_train + num_val):
        rng = np.random.default_rng([seed, 1000 + index])
        label = index % 2
        hu, offset = nodule_case(shape, spacing, bool(label), rng)
        lps = bool((index // 2) % 2)
        affine = ct_affine(spacing, shape, lps, rng)
        name = f"nodule_{index:03d}.nii.gz"
        save_ct(os.path.join(folder, "volumes", name), hu, affine, lps)
        # World position of the nodule: the volume centre (world) plus the RAS offset.
        file_centre = (np.asarray(shape) - 1) / 2
        world = affine[:3, :3] @ file_centre + affine[:3, 3] + offset
        split = "train" if index < num_train else "val"
        rows.append({"image": f"volumes/{name}", "label": label, "split": split, "x": f"{world[0]:.2f}", "y": f"{world[1]:.2f}", "z": f"{world[2]:.2f}"})
    with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

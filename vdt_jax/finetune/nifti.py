"""NIfTI volumes in and out: canonical orientation, spacing, resampling, intensities, checks.

Model space. Every volume is reoriented to the closest canonical (RAS+)
orientation, its axes ordered (D, H, W) = (inferior->superior,
posterior->anterior, left->right), i.e. depth runs along the scanner's z axis
so axial slices are depth slices, and a trailing channel axis is added:
(D, H, W, C). Two files holding the same scan in different orientations (for
example LPS from a DICOM converter and RAS) therefore give the same model
array, and the same prediction.

Spacing comes from the affine, optionally resampled to a target spacing in
(x, y, z) mm (the order of NIfTI headers and MONAI's `Spacingd`; a 0 entry
keeps that axis, e.g. (0, 0, 1) resamples depth only). Predictions go back the
same way, to the file's own grid, axes, affine and header, so they overlay the
source image in any viewer.

Intensities: the header's scl_slope/scl_inter are applied (CT stored as int16
with an offset becomes Hounsfield units), then an optional HU window (clip),
then a normalisation: the window mapped to [0, 1] ("window"), (x - mean) / std
with fixed numbers ("fixed", CT), "zscore" per volume (MRI), or "none".

Every check raises `NiftiError` naming the file: missing files, wrong number
of dimensions (3D, or 4D whose 4th axis holds the declared channels, e.g. a
singleton), NaN/inf voxels, image/label shape or affine mismatches, labels that
are not integers or lie outside the declared classes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

from vdt_jax.atomic import atomic_write
from vdt_jax.errors import ConfigError, UserError

# Canonical (x, y, z) -> model (D, H, W) = (z, y, x).
_TO_MODEL = (2, 1, 0)
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


class NiftiError(UserError, ValueError):
    """A NIfTI file that cannot be used as it is; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie: enough to map between the file and model space.

    Attributes:
      path: the source file.
      affine: the file's voxel-to-world (RAS mm) affine.
      shape: the file's spatial shape, in the file's axis order.
      spacing: the file's voxel sizes (x, y, z) in the canonical orientation, mm.
      model_shape: (D, H, W) of the volume in model space (after resampling).
    """

    path: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    model_shape: tuple[int, int, int]

    @property
    def orientation(self) -> np.ndarray:
        """nibabel orientation of the file's axes relative to RAS."""
        return orientations.io_orientation(self.affine)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """(D, H, W) of the file reoriented to model axes, before any resampling."""
        xyz = [0, 0, 0]
        for axis, (target, _) in enumerate(self.orientation):
            xyz[int(target)] = self.shape[axis]
        return tuple(xyz[i] for i in _TO_MODEL)  # type: ignore[return-value]

    @property
    def canonical_affine(self) -> np.ndarray:
        return self.affine @ orientations.inv_ornt_aff(self.orientation, self.shape)

    @property
    def axcodes(self) -> str:
        return "".join(orientations.aff2axcodes(self.affine))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "affine": self.affine.tolist(), **{k: list(getattr(self, k)) for k in ("shape", "spacing", "model_shape")}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Geometry":
        return cls(
            path=data["path"],
            affine=np.asarray(data["affine"], np.float64),
            shape=tuple(data["shape"]),
            spacing=tuple(data["spacing"]),
            model_shape=tuple(data["model_shape"]),
        )


NORMALIZATIONS = ("window", "fixed", "zscore", "none")


@dataclasses.dataclass(frozen=True)
class Intensity:
    """How voxel values become network inputs (see the module docstring).

    Attributes:
      hu_window: (centre, width) to clip to, or None.
      normalize: "window" (the window maps to [0, 1]), "fixed" ((x - mean) / std
        with `mean_std`), "zscore" (per volume and channel) or "none".
      mean_std: (mean, std) for "fixed".
    """

    hu_window: tuple[float, float] | None = None
    normalize: str = "none"
    mean_std: tuple[float, float] | None = None

    @classmethod
    def from_config(cls, config: Any) -> "Intensity":
        """From data.hu_window (() for none), data.normalize and data.normalize_mean_std."""
        window = tuple(float(v) for v in config.hu_window) or None
        if window is not None and (len(window) != 2 or window[1] <= 0):
            raise ConfigError(f"data.hu_window must be () or (centre, width>0); got {tuple(config.hu_window)}")
        if config.normalize not in NORMALIZATIONS:
            raise ConfigError(f"data.normalize must be one of {NORMALIZATIONS}; got {config.normalize!r}")
        if config.normalize == "window" and window is None:
            raise ConfigError('data.normalize="window" maps data.hu_window to [0, 1]: set data.hu_window=(centre, width)')
        mean_std = None
        if config.normalize == "fixed":
            mean_std = tuple(float(v) for v in config.normalize_mean_std)
            if len(mean_std) != 2 or mean_std[1] <= 0:
                raise ConfigError(f"data.normalize_mean_std must be (mean, std>0); got {config.normalize_mean_std!r}")
        return cls(window, config.normalize, mean_std)

    def apply(self, data: np.ndarray) -> np.ndarray:
        data = data.astype(np.float32, copy=True)
        if self.hu_window is not None:
            centre, width = self.hu_window
            low, high = centre - width / 2, centre + width / 2
            np.clip(data, low, high, out=data)
        if self.normalize == "zscore":  # per volume and channel
            mean = data.mean(axis=(0, 1, 2), keepdims=True)
            std = np.maximum(data.std(axis=(0, 1, 2), keepdims=True), 1e-6)
            return (data - mean) / std
        if self.normalize == "fixed":
            mean, std = self.mean_std
            return (data - mean) / std
        if self.normalize == "window":
            return (data - low) / (high - low)
        return data


def check_exists(path: str, what: str = "file") -> None:
    if not os.path.isfile(path):
        raise NiftiError(f"{path}: {what} not found")


def check_readable(path: str, where: str) -> None:
    """Raises NiftiError (naming `where`, e.g. the manifest row) unless `path` has a NIfTI header (not read further)."""
    try:
        _load(path)
    except NiftiError as error:
        raise NiftiError(f"{where}: {error}") from None


def _load(path: str) -> nib.Nifti1Image:
    check_exists(path, "NIfTI file")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises several unrelated types for bad files
        raise NiftiError(f"{path}: not a readable NIfTI file: {error}") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path}: expected a NIfTI file, got {type(image).__name__}")
    return image


def _spatial(array: np.ndarray, path: str, channels: int) -> np.ndarray:
    """(X, Y, Z) or (X, Y, Z, C) -> (X, Y, Z, C), checking the dimensions."""
    check_shape(array.shape, path, channels)
    if array.ndim == 3:
        return array[..., None]
    return array[:, :, :, 0, :] if array.ndim == 5 else array  # NIfTI stores vector data on the 5th axis


def check_shape(shape: Sequence[int], path: str, channels: int) -> None:
    """Raise `NiftiError` unless `shape` is 3D, or 4D (or 5D vector data) with `channels` values per voxel."""
    shape = tuple(int(n) for n in shape)
    spatial = shape[:3] + shape[4:] if len(shape) == 5 and shape[3] == 1 else shape + (1,) * (len(shape) == 3)
    if len(spatial) != 4:
        raise NiftiError(f"{path}: has {len(shape)} dimensions {shape}; expected a 3D volume (or 4D with {channels} channel(s) on the 4th axis)")
    if spatial[3] != channels:
        raise NiftiError(f"{path}: has {spatial[3]} values on its 4th axis (shape {shape}); expected {channels} channel(s) (data.in_channels)")


def read_geometry(path: str, *, channels: int = 1, target_spacing: Sequence[float] | None = None) -> Geometry:
    """A file's `Geometry` from its header alone, checked as `load_image` checks it (raises `NiftiError`)."""
    image = _load(path)
    check_shape(image.shape, path, channels)
    return _geometry(image, path, target_spacing)


def _geometry(image: nib.Nifti1Image, path: str, target_spacing: Sequence[float] | None) -> Geometry:
    affine = np.asarray(image.affine, np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(f"{path}: the header's affine is singular or not finite:\n{affine}")
    shape = tuple(int(s) for s in image.shape[:3])
    ornt = orientations.io_orientation(affine)
    canonical = affine @ orientations.inv_ornt_aff(ornt, shape)
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(canonical))
    geometry = Geometry(os.path.abspath(path), affine, shape, spacing, (0, 0, 0))
    model_shape = resampled_shape(geometry.canonical_shape, spacing, target_spacing)
    return dataclasses.replace(geometry, model_shape=model_shape)


def to_model_axes(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """File-ordered (X, Y, Z, ...) -> canonical model order (D, H, W, ...)."""
    canonical = orientations.apply_orientation(array, geometry.orientation)
    return np.ascontiguousarray(np.moveaxis(canonical, (0, 1, 2), (2, 1, 0)))


def to_file_axes(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The inverse of `to_model_axes`, for a (D, H, W, ...) array on the canonical grid."""
    canonical = np.moveaxis(array, (2, 1, 0), (0, 1, 2))
    back = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), geometry.orientation)
    return np.ascontiguousarray(orientations.apply_orientation(canonical, back))


def model_spacing(geometry: Geometry) -> tuple[float, float, float]:
    """Voxel sizes of the model-space array (D, H, W) in mm."""
    zoom = np.asarray(geometry.model_shape) / np.asarray(geometry.canonical_shape)
    return tuple(float(s) for s in np.asarray(geometry.spacing)[list(_TO_MODEL)] / zoom)  # type: ignore[return-value]


def resampled_shape(canonical_shape: Sequence[int], spacing_xyz: Sequence[float], target_xyz: Sequence[float] | None):
    """(D, H, W) after resampling from `spacing_xyz` to `target_xyz` (None: unchanged; a 0 entry keeps that axis)."""
    if target_xyz is None:
        return tuple(int(s) for s in canonical_shape)
    spacing = np.asarray(spacing_xyz, np.float64)[list(_TO_MODEL)]
    target = np.asarray(target_xyz, np.float64)[list(_TO_MODEL)]
    target = np.where(target > 0, target, spacing)  # e.g. (0, 0, 1): depth only, as the LiTS recipe resamples
    return tuple(max(int(round(n * s / t)), 1) for n, s, t in zip(canonical_shape, spacing, target))


def resize(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample the first three axes to `shape`; voxel centres aligned (grid mode), edges replicated.

    order 1 (trilinear) for images, 0 (nearest) for label maps.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape[:3]) == shape:
        return array
    zoom = [n / o for n, o in zip(shape, array.shape[:3])] + [1.0] * (array.ndim - 3)
    out = ndimage.zoom(array, zoom, order=order, grid_mode=True, mode="nearest")
    if tuple(out.shape[:3]) != shape:  # scipy rounds the output shape; never off by more than one voxel
        out = _fit_shape(out, shape)
    return out


def _fit_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    pad = [(0, max(t - s, 0)) for s, t in zip(array.shape[:3], shape)] + [(0, 0)] * (array.ndim - 3)
    array = np.pad(array, pad, mode="edge")
    return array[: shape[0], : shape[1], : shape[2]]


def load_image(
    path: str,
    *,
    channels: int = 1,
    target_spacing: Sequence[float] | None = None,
    intensity: Intensity = Intensity(),
) -> tuple[np.ndarray, Geometry]:
    """A NIfTI image as a float32 (D, H, W, C) model-space array and its geometry.

    Args:
      path: .nii or .nii.gz file.
      channels: channels expected on the 4th axis (a 3D file has one).
      target_spacing: (x, y, z) mm to resample to (0 keeps an axis), or None.
      intensity: windowing and normalisation (after the header's scaling).

    Raises:
      NiftiError: naming `path`, for a missing or unreadable file, wrong
        dimensions, a singular affine, or NaN/inf voxels.
    """
    image = _load(path)
    data = _spatial(np.asarray(image.get_fdata(dtype=np.float32)), path, channels)
    bad = ~np.isfinite(data)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0][:3])
        raise NiftiError(f"{path}: {int(bad.sum())} voxel(s) are NaN or infinite (first at voxel {first})")
    geometry = _geometry(image, path, target_spacing)
    data = resize(to_model_axes(data, geometry), geometry.model_shape, order=1)
    return intensity.apply(data), geometry


def load_label(
    path: str, image_geometry: Geometry, num_classes: int, label_map: dict[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A label map on its image's grid: (model-space uint8 (D, H, W), canonical-grid uint8 (D, H, W)).

    The second array is at the file's resolution (no resampling), the grid on
    which predictions are scored and written. `label_map` renames file values
    first (e.g. {2: 1} merges LiTS tumours into the liver).

    Raises:
      NiftiError: naming `path`, for a missing file, a shape or affine that
        differs from the image's, non-integer values or values outside
        [0, num_classes).
    """
    image = _load(path)
    data = np.asarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NiftiError(f"{path}: a label map must be 3D (or 4D with a singleton 4th axis); got shape {data.shape}")
    if tuple(data.shape) != tuple(image_geometry.shape):
        raise NiftiError(
            f"{path}: label shape {tuple(data.shape)} differs from its image {image_geometry.path} "
            f"{tuple(image_geometry.shape)}"
        )
    if not np.allclose(image.affine, image_geometry.affine, rtol=1e-4, atol=1e-3):
        raise NiftiError(
            f"{path}: label affine differs from its image {image_geometry.path}:\n"
            f"label:\n{np.round(image.affine, 4)}\nimage:\n{np.round(image_geometry.affine, 4)}"
        )
    labels = _integer_labels(data, path, num_classes, label_map or {})
    canonical = to_model_axes(labels, image_geometry)
    return resize(canonical, image_geometry.model_shape, order=0), canonical


def _integer_labels(data: np.ndarray, path: str, num_classes: int, label_map: dict[int, int]) -> np.ndarray:
    if not np.all(np.isfinite(data)):
        raise NiftiError(f"{path}: label map holds NaN or infinite values")
    if np.issubdtype(data.dtype, np.floating):
        if np.any(data != np.round(data)):
            raise NiftiError(f"{path}: label map holds non-integer values, e.g. {data[data != np.round(data)][:3]}")
    data = data.astype(np.int32)
    if label_map:
        mapped = data.copy()
        for value, target in label_map.items():
            mapped[data == value] = target
        data = mapped
    values = np.unique(data)
    outside = values[(values < 0) | (values >= num_classes)]
    if outside.size:
        raise NiftiError(
            f"{path}: label values {outside[:10].astype(np.int64).tolist()} are outside the {num_classes} declared "
            f"classes [0, {num_classes - 1}]"
        )
    return data.astype(np.uint8)


def label_to_file(label: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A (D, H, W, ...) label map in model space -> the source file's grid (nearest) and axis order."""
    if tuple(label.shape[:3]) != tuple(geometry.canonical_shape):
        label = resize(label, geometry.canonical_shape, order=0)
    return to_file_axes(label, geometry)


def save_label(path: str, label: np.ndarray, geometry: Geometry) -> None:
    """Write a model-space (D, H, W) label map as NIfTI with the source image's affine and header.

    Atomic: written beside `path` under a temporary name and renamed, so an
    interrupted run never leaves a half-written file nor destroys the previous one.
    """
    _save_uint8(path, label_to_file(np.asarray(label, np.uint8), geometry), geometry, 1.0)


def save_probabilities(path: str, probabilities: np.ndarray, geometry: Geometry, levels: int = 255) -> None:
    """Write model-space (D, H, W, K) uint8 probabilities (round(p * levels)) as a 4D NIfTI on the source grid.

    Resampled like the labels (nearest), so the labelled class has the largest
    value (rounding may tie it); scl_slope = 1 / levels shows them in [0, 1].
    """
    _save_uint8(path, label_to_file(np.asarray(probabilities, np.uint8), geometry), geometry, 1.0 / levels)


def _save_uint8(path: str, data: np.ndarray, geometry: Geometry, slope: float) -> None:
    source = _load(geometry.path)
    header = source.header.copy()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(data, geometry.affine, header)
    image.header.set_slope_inter(slope, 0.0)
    # Both orientation fields exactly as the source has them (viewers pick either).
    image.set_qform(*source.get_qform(coded=True))
    image.set_sform(*source.get_sform(coded=True))
    atomic_write(path, lambda tmp: nib.save(image, tmp))


def world_to_model_index(world_xyz: Sequence[float], geometry: Geometry) -> np.ndarray:
    """A point in world (RAS mm) coordinates -> its (d, h, w) position in model space (float)."""
    canonical = np.linalg.solve(geometry.canonical_affine, np.r_[np.asarray(world_xyz, np.float64), 1.0])[:3]
    dhw = canonical[list(_TO_MODEL)]
    zoom = np.asarray(geometry.model_shape) / np.asarray(geometry.canonical_shape)
    return (dhw + 0.5) * zoom - 0.5  # voxel centres stay aligned under grid-mode resampling

"""Adjacent CT slices as a detector input: the DeepLesion setting of the MP3D reference.

DeepLesion ships each axial slice as a 16-bit PNG holding HU + 32768. The
reference detector reads 9 adjacent slices around the key slice, clips HU to
the window [-1024, 1050] and maps it linearly to [0, 255], then normalises
every slice with the same mean 123.675 and std 58.395 (the first entries of
the usual ImageNet RGB statistics). The result is one channel-last volume
(D=9, H, W, 1) for a pseudo-3D backbone and the group transform module.
"""

from __future__ import annotations

import numpy as np

DEEPLESION_SLICES = 9
DEEPLESION_HU_WINDOW = (-1024.0, 1050.0)
DEEPLESION_MEAN, DEEPLESION_STD = 123.675, 58.395
PNG_HU_OFFSET = 32768


def window_hu(hu: np.ndarray, window: tuple[float, float] = DEEPLESION_HU_WINDOW) -> np.ndarray:
    """HU clipped to `window` = (low, high) and mapped linearly to [0, 255], float32."""
    low, high = window
    if not high > low:
        raise ValueError(f"HU window must be (low, high) with high > low; got {tuple(window)}")
    return (np.clip((np.asarray(hu, np.float32) - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.float32)


def slices_to_input(
    hu_slices: np.ndarray,
    window: tuple[float, float] = DEEPLESION_HU_WINDOW,
    mean: float = DEEPLESION_MEAN,
    std: float = DEEPLESION_STD,
) -> np.ndarray:
    """(..., D, H, W) HU slices -> (..., D, H, W, 1) windowed and normalised float32 network input."""
    return ((window_hu(hu_slices, window) - mean) / std)[..., None].astype(np.float32)

"""Pure image operations of the host pipeline: decode, crop geometry, resize.

Numpy arrays in, numpy arrays out, no grain: the grain transforms in
`transforms.py` wrap these, and `python -m vdt_jax.benchmark` times them on
machines without grain.

Two decoders and two resize filters, chosen by the config (`data.decoder`,
`data.interpolation`):

  decoder "opencv"  `cv2.imdecode`: about 2x PIL's speed per core with the
                    crop and resize below (README, "Speed").
  decoder "pil"     Pillow, the fallback when OpenCV is not installed.
  interpolation "bilinear"            OpenCV's INTER_LINEAR without
                    antialiasing: what the reference pipeline (mmcv) used.
  interpolation "bilinear_antialias"  Pillow's bilinear filter, which widens
                    with the downscale factor (torchvision on PIL images).

Both decoders give RGB uint8 (H, W, 3) for RGB, grayscale, CMYK, palette and
alpha JPEG/PNG files (a PNG stored under a .jpg name too), and neither applies
EXIF orientation, so they give the same pixels up to rounding.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from vdt_jax.errors import ConfigError

try:  # OpenCV is an optional speed-up; PIL works everywhere.
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

DECODERS = ("opencv", "pil")
INTERPOLATIONS = ("bilinear", "bilinear_antialias")
# (top, left, height, width) of a crop, in pixels.
Box = tuple[int, int, int, int]
_cv2_threads_set = False


def check_choices(decoder: str, interpolation: str) -> None:
    """Raises a ValueError naming the config key when a choice is unknown or unavailable."""
    if decoder not in DECODERS:
        raise ConfigError(f"data.decoder={decoder!r}: expected one of {DECODERS}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"data.interpolation={interpolation!r}: expected one of {INTERPOLATIONS}")
    if cv2 is None and (decoder == "opencv" or interpolation == "bilinear"):
        raise ConfigError(
            f"data.decoder={decoder!r} / data.interpolation={interpolation!r} need OpenCV: "
            "pip install opencv-python-headless, or set data.decoder='pil' and data.interpolation='bilinear_antialias'"
        )


def _opencv():
    """cv2, single-threaded: the pipeline's parallelism is its worker processes."""
    global _cv2_threads_set
    if not _cv2_threads_set:
        cv2.setNumThreads(1)
        _cv2_threads_set = True
    return cv2


def decode_image(encoded: bytes, decoder: str = "pil") -> np.ndarray:
    """Decodes JPEG/PNG bytes into an RGB uint8 array of shape (H, W, 3).

    Grayscale images get three identical channels; CMYK, palette and alpha
    images are converted to RGB, so every image becomes three depth slices.

    Args:
      encoded: the file's bytes.
      decoder: "pil" or "opencv".

    Returns:
      The RGB image.
    """
    if decoder == "opencv":
        return _decode_opencv(encoded)
    with Image.open(io.BytesIO(encoded)) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def _decode_opencv(encoded: bytes) -> np.ndarray:
    cv = _opencv()
    flags = cv.IMREAD_COLOR | cv.IMREAD_IGNORE_ORIENTATION  # PIL ignores EXIF orientation too
    bgr = cv.imdecode(np.frombuffer(encoded, np.uint8), flags)
    if bgr is None:  # a format OpenCV was built without; PIL may still read it
        return decode_image(encoded, "pil")
    return cv.cvtColor(bgr, cv.COLOR_BGR2RGB)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Box:
    """Samples a crop box the way torchvision's RandomResizedCrop does.

    The crop covers a uniform fraction `scale` of the image area with an aspect
    ratio (width / height) drawn log-uniformly from `ratio`. If no sample fits
    inside the image within `attempts` tries, the largest centred crop whose
    aspect ratio lies in `ratio` is returned.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    return _centre_fallback_box(height, width, ratio)


def _centre_fallback_box(height: int, width: int, ratio: tuple[float, float]) -> Box:
    """The whole image, trimmed to the nearest allowed aspect ratio, centred."""
    aspect = width / height
    if aspect < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resize(image: np.ndarray, height: int, width: int, interpolation: str = "bilinear_antialias") -> np.ndarray:
    """Resizes an RGB uint8 image to (height, width) with the chosen filter."""
    if interpolation == "bilinear":
        # A numpy view with a row stride is fine: cv2 wraps it without a copy.
        return _opencv().resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR), dtype=np.uint8)


def resized_crop(image: np.ndarray, box: Box, size: int, interpolation: str = "bilinear_antialias") -> np.ndarray:
    """Crops `box` out of `image` and resizes it to (size, size)."""
    top, left, crop_h, crop_w = box
    if interpolation == "bilinear":
        return resize(image[top : top + crop_h, left : left + crop_w], size, size, interpolation)
    # PIL crops and resizes in one pass (the filter reads the pixels just
    # outside the box, as torchvision's PIL path does).
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    return np.asarray(resized, dtype=np.uint8)


def resize_shorter_side(image: np.ndarray, shorter: int, interpolation: str = "bilinear_antialias") -> np.ndarray:
    """Resizes so the shorter side is `shorter`, keeping the aspect ratio.

    The longer side is truncated to an int, as torchvision's Resize(int) does.
    """
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = shorter, int(shorter * width / height)
    else:
        new_h, new_w = int(shorter * height / width), shorter
    if (new_h, new_w) == (height, width):
        return image
    return resize(image, new_h, new_w, interpolation)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size) window; offsets rounded like torchvision's CenterCrop."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot centre-crop {size}x{size} out of a {height}x{width} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image[top : top + size, left : left + size]

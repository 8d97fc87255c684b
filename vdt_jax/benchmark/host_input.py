"""The host input pipeline of ImageNet pre-training, timed per core and with worker processes.

The training transform is decode -> RandomResizedCrop(image_size) -> flip,
applied to synthetic JPEGs of ImageNet's typical size (500x375, quality 90,
smooth content plus noise, about 100 KB). Per core: one process, one thread.
With workers: a pool of processes, each running the same loop, as grain's
workers do. No jax here, so spawned workers start fast.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from vdt_jax.data import image_ops


@dataclasses.dataclass(frozen=True)
class Variant:
    decoder: str
    interpolation: str

    @property
    def name(self) -> str:
        return f"{self.decoder}+{self.interpolation}"


def available_variants() -> list[Variant]:
    """PIL with its antialiased resize (the old default) and, with OpenCV, the OpenCV path."""
    variants = [Variant("pil", "bilinear_antialias")]
    if image_ops.cv2 is not None:
        variants += [Variant("opencv", "bilinear"), Variant("opencv", "bilinear_antialias")]
    return variants


def synthetic_jpegs(count: int, width: int = 500, height: int = 375, seed: int = 0) -> list[bytes]:
    """`count` distinct JPEGs with photo-like statistics (smooth shapes plus sensor-like noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(count):
        fx, fy, phase = rng.uniform(0.005, 0.05, 3)
        base = [127 + 100 * np.sin(cols * fx + rows * fy + phase * c * 10) for c in range(3)]
        image = np.stack(base, -1) + rng.normal(0, 8, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def train_transform(encoded: bytes, rng: np.random.Generator, size: int, variant: Variant) -> np.ndarray:
    """decode -> RandomResizedCrop -> horizontal flip, as the training loader does it."""
    image = image_ops.decode_image(encoded, variant.decoder)
    box = image_ops.random_resized_crop_box(rng, image.shape[0], image.shape[1])
    image = image_ops.resized_crop(image, box, size, variant.interpolation)
    return np.ascontiguousarray(image[:, ::-1]) if rng.random() < 0.5 else image


def _loop(args: tuple[list[bytes], int, int, Variant, int]) -> float:
    """Transforms `count` images (cycling over `jpegs`); returns the seconds it took."""
    jpegs, count, size, variant, seed = args
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(count):
        train_transform(jpegs[i % len(jpegs)], rng, size, variant)
    return time.perf_counter() - start


def per_core_rate(jpegs: list[bytes], count: int, size: int, variant: Variant) -> float:
    """Images per second in this process, one thread (after a short warm-up)."""
    _loop((jpegs, 8, size, variant, 0))
    return count / _loop((jpegs, count, size, variant, 1))


def pool_rate(jpegs: list[bytes], count_per_worker: int, size: int, variant: Variant, workers: int) -> float:
    """Images per second of `workers` spawned processes running the loop together."""
    context = multiprocessing.get_context("spawn")  # never fork a process that has started JAX
    with context.Pool(workers) as pool:
        pool.map(_loop, [(jpegs, 4, size, variant, w) for w in range(workers)])  # start-up and warm-up
        start = time.perf_counter()
        pool.map(_loop, [(jpegs, count_per_worker, size, variant, w) for w in range(workers)])
        seconds = time.perf_counter() - start
    return workers * count_per_worker / seconds


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def measure(size: int, images: int, workers: int) -> dict:
    """Per-core rate of every available variant, and the pool rate of the fastest.

    Returns:
      {"per_core": {variant name: img/s}, "best": name, "workers": n,
       "pool": img/s of the best variant with n workers}.
    """
    jpegs = synthetic_jpegs(32)
    per_core = {v.name: per_core_rate(jpegs, images, size, v) for v in available_variants()}
    best = max(available_variants(), key=lambda v: per_core[v.name])
    workers = workers or usable_cores()
    pooled = pool_rate(jpegs, max(images // 2, 8), size, best, workers)
    return {
        "image_size": size,
        "jpeg_bytes_mean": int(np.mean([len(j) for j in jpegs])),
        "per_core": per_core,
        "best": best.name,
        "workers": workers,
        "pool": pooled,
    }

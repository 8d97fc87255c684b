"""Timing helper shared by the benchmarks: interleaved repeats, median seconds."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn so machine noise hits all alike."""
    for fn in fns.values():  # warm-up / compile
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}

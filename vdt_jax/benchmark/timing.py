"""Interleaved timing: every candidate runs once per round, so machine noise hits all alike."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Stats:
    """Seconds per call over the timed rounds."""

    median: float
    min: float
    max: float
    rounds: int

    def per_second(self, items: int) -> float:
        """Items per second at the median time."""
        return items / self.median


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, Stats]:
    """Times each zero-argument function `rounds` times, in turn, after `warmup` untimed calls each.

    Args:
      fns: name -> function; each call must return only when its work is done
        (block on JAX arrays inside it).
      rounds: timed calls per function.
      warmup: untimed calls per function first (compilation, caches, allocator).

    Returns:
      name -> Stats of the timed calls.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {
        name: Stats(statistics.median(s), min(s), max(s), len(s)) for name, s in samples.items()
    }

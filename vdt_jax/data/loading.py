"""How every task batches, shards and pads its data: one grain loader, one eval shard, one pad-and-mask.

Training: `train_loader` builds the one kind of grain `DataLoader` every task
uses: an endless, shuffled, checkpointable stream of this process's share of a
random-access source, mapped by the task's transforms and batched.

Evaluation is a collective over all processes (each eval step is one global
batch), so every process must yield the same number of batches although the
examples rarely divide evenly: `sharded_eval_batches` gives each process a
contiguous share (`eval_shard`), pads a partial last batch and tops a short
share up with fully padded batches (`pad_batch`), and marks real rows with a
bool 'mask'. Across processes every example is seen exactly once.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import grain
import numpy as np
from absl import flags

from vdt_jax.data import workers

Batch = dict[str, np.ndarray]

# Threads that read records from the source (and, with num_workers=0, run the
# transforms: PIL and numpy release the GIL for most of their work).
READ_THREADS = 4
# Records those threads keep in flight. grain (0.2.18) scans its whole read
# buffer on every record it hands out, so a buffer much larger than the threads
# need costs CPU: with 128 records (4 batches of 32) the demo's loader spent 40%
# of its time in that scan; 16 gave 20% more images per CPU-second.
READ_BUFFER = 16


def check_shard(process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, process_count={process_count}), got {process_index}")


def ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; allow use outside `absl.app.run`."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def read_options() -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_BUFFER)


def train_loader(
    source: grain.sources.RandomAccessDataSource,
    operations: Sequence[Any],
    *,
    seed: int,
    per_process_batch: int,
    num_workers: int,
    prefetch_buffer: int,
    process_index: int,
    process_count: int,
) -> grain.DataLoader:
    """An infinite, shuffled, checkpointable loader of this process's share of `source`.

    Each process reads its own 1/process_count of the records (grain's
    `ShardOptions`, remainder dropped), reshuffled every epoch from `seed`;
    `operations` (grain transforms) run on each record, then records are
    batched by `per_process_batch`. With `num_workers` > 0 the transforms run
    in that many worker processes, each preparing `prefetch_buffer` batches ahead;
    they ignore SIGTERM and exit with the main process (`vdt_jax.data.workers`).
    """
    check_shard(process_index, process_count)
    if len(source) < process_count:
        raise ValueError(f"{source!r} has {len(source)} records: fewer than the {process_count} processes that share it")
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=shard, shuffle=True, num_epochs=None, seed=seed
    )
    if num_workers > 0:
        ensure_absl_flags_parsed()
        operations = [workers.SetUpWorker(), *operations]
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[*operations, grain.transforms.Batch(per_process_batch, drop_remainder=True)],
        worker_count=num_workers,
        worker_buffer_size=prefetch_buffer,
        shard_options=shard,
        read_options=read_options(),
    )


def eval_shard(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of this process's contiguous share; the first shares take one extra example."""
    check_shard(process_index, process_count)
    base, extra = divmod(num_examples, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (1 if process_index < extra else 0)


def sharded_eval_batches(
    num_examples: int,
    batches_of: Callable[[int, int], Iterable[Batch]],
    *,
    empty: Batch,
    per_process_batch: int,
    process_index: int,
    process_count: int,
) -> Iterator[Batch]:
    """This process's padded, masked eval batches; every process yields the same number.

    Args:
      num_examples: examples in the whole evaluation set.
      batches_of: (start, end) -> batches of at most `per_process_batch`
        examples [start, end), in order (called only for a non-empty share).
      empty: a batch with zero rows and every key, for fully padded batches.
      per_process_batch, process_index, process_count: this process's part.

    Yields:
      `per_process_batch`-row batches with a bool 'mask' (False on padding, whose values are zero).
    """
    start, end = eval_shard(num_examples, process_index, process_count)
    num_batches = math.ceil(math.ceil(num_examples / process_count) / per_process_batch)
    count = 0
    for batch in batches_of(start, end) if end > start else ():
        yield pad_batch(batch, per_process_batch)
        count += 1
    if count > num_batches:
        raise AssertionError(f"eval share [{start}, {end}) gave {count} batches, expected at most {num_batches}")
    for _ in range(num_batches - count):
        yield pad_batch(empty, per_process_batch)


def pad_batch(batch: Batch, batch_size: int) -> Batch:
    """Zero-pad every array to `batch_size` rows and add 'mask' (True on the real rows)."""
    valid = len(next(iter(batch.values())))
    out = {k: np.concatenate([v, np.zeros((batch_size - valid, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    out["mask"] = np.arange(batch_size) < valid
    return out


def unpadded(outputs: Batch) -> Batch:
    """The rows of a batch (or of its eval outputs) whose 'mask' is True, without the mask."""
    mask = np.asarray(outputs["mask"], bool)
    return {k: np.asarray(v)[mask] for k, v in outputs.items() if k != "mask"}

"""One process of a multi-process pre-training run, for tests/test_distributed.py and test_preemption.py.

    VDT_COORDINATOR_ADDRESS=127.0.0.1:PORT VDT_NUM_PROCESSES=2 VDT_PROCESS_ID=0 \
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
        python -m tests.multihost_worker --workdir=... --data_dir=... --steps=4

It starts up the way `python -m vdt_jax.pretrain` does (`vdt_jax.distributed`
reading the VDT_* variables), trains the pre-training task on the tiny
`vdt_shapes` dataset (prepared beforehand in --data_dir) and writes the file
names of every example it fed to training and to evaluation to
`<workdir>/reads/process_<i>.json` (appending one record per run). Exit
status 0 also after a preemption stop; the file then says "preempted_at".
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import ml_collections
import numpy as np

TINY = "vdt_shapes/tiny"  # 300 train / 100 validation images


def tiny_pretrain_config(data_dir: str, steps: int, **overrides: Any) -> ml_collections.ConfigDict:
    import configs.default

    config = configs.default.get_config()
    config.batch_size = 16  # 8 per process, 2 per device on 2 x 4 devices
    config.eval_batch_size = 24
    config.num_train_steps = steps
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.eval_every_steps = -1  # once per 18-step epoch, so only at the end here
    config.model.widths = (8, 8, 8, 8)
    config.data.name = TINY
    config.data.data_dir = str(data_dir)
    config.data.image_size = 16
    config.data.eval_resize = 18
    config.optimizer.warmup_epochs = 0.0
    config.update_from_flattened_dict(overrides)
    return config


class _RecordingIterator:
    """Wraps a grain DataLoaderIterator: strips and records 'file_name', keeps get_state/set_state."""

    def __init__(self, inner, record: list[str]):
        self._inner, self._record = inner, record

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = dict(next(self._inner))
        self._record.extend(_names(batch.pop("file_name")))
        return batch

    def __getattr__(self, name: str):  # get_state, set_state, start_prefetch
        return getattr(self._inner, name)


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def recording_task_class():
    """The pre-training task, reading through the pipeline's file-name-keeping loaders."""
    import jax

    from vdt_jax.data import images
    from vdt_jax.pretrain.vdt_classification import VDTClassificationTask

    class RecordingTask(VDTClassificationTask):
        def __init__(self, config):
            super().__init__(config)
            self.train_names: list[str] = []
            self.eval_names: list[str] = []

        def train_iterator(self, *, seed: int, per_process_batch: int):
            loader = images.train_loader(
                self.config.data, seed=seed, per_process_batch=per_process_batch,
                process_index=jax.process_index(), process_count=jax.process_count(), keep_file_name=True,
            )  # fmt: skip
            return _RecordingIterator(iter(loader), self.train_names)

        def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
            batches = images.eval_batches(
                self.config.data, per_process_batch=per_process_batch,
                process_index=jax.process_index(), process_count=jax.process_count(), keep_file_name=True,
            )  # fmt: skip
            for batch in batches:
                names = _names(batch.pop("file_name"))
                self.eval_names.extend(n for n, real in zip(names, batch["mask"]) if real)
                yield batch

    return RecordingTask


def run(workdir: str, data_dir: str, steps: int, **overrides: Any) -> dict[str, Any]:
    """Train in this process (already part of the distributed runtime, if any); returns the read record."""
    import jax

    from vdt_jax.train import loop, preemption

    config = tiny_pretrain_config(data_dir, steps, **overrides)
    task = recording_task_class()(config)
    record: dict[str, Any] = {"process": jax.process_index(), "processes": jax.process_count()}
    try:
        record["metrics"] = loop.train_and_evaluate(config, workdir, task)
    except preemption.Preempted as stop:  # recorded, then re-raised: the process exits with status 0
        record["preempted_at"] = stop.step
        raise
    finally:
        record.update(train=task.train_names, eval=task.eval_names)
        _append_record(workdir, record)
    return record


def probe_signal_agreement(workdir: str, steps: int = 12, check_every: int = 3, signal_at: int = 4) -> None:
    """The "signal" preemption mode across processes, without training: process 1 alone gets SIGTERM."""
    import signal

    import jax

    from vdt_jax.train import preemption

    agreed = None
    with preemption.PreemptionWatch(mode="signal", check_every=check_every) as watch:
        for step in range(1, steps + 1):
            if jax.process_index() == 1 and step == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            if watch.reached_sync_point(step):
                agreed = step
                break
    _append_record(workdir, {"process": jax.process_index(), "agreed": agreed, "signalled": watch.signalled})


def _append_record(workdir: str, record: dict[str, Any]) -> None:
    import jax

    directory = os.path.join(workdir, "reads")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"process_{jax.process_index()}.json"), "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    import argparse

    from vdt_jax import distributed

    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--probe_signal_mode", action="store_true", help="run probe_signal_agreement instead")
    parser.add_argument("--override", action="append", default=[], help="config key=value (JSON or a string)")
    args = parser.parse_args()
    distributed.initialize()  # from the VDT_* environment, as `python -m vdt_jax.pretrain` would
    if args.probe_signal_mode:
        return probe_signal_agreement(args.workdir)
    overrides = {key: _value(text) for key, text in (item.split("=", 1) for item in args.override)}
    run(args.workdir, args.data_dir, args.steps, **overrides)


if __name__ == "__main__":
    main()


# --- launching workers from a test -------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, data_dir, steps: int, *, num_processes: int = 2, devices_per_process: int = 4,
           cache_dir=None, overrides: dict[str, Any] | None = None, extra_args: tuple[str, ...] = ()) -> list:
    """Starts `num_processes` workers on 127.0.0.1; returns their Popen objects (output in <workdir>.<i>.log)."""
    import subprocess
    import sys

    address = f"127.0.0.1:{free_port()}"
    processes = []
    for index in range(num_processes):
        env = {
            **os.environ,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
            "JAX_PLATFORMS": "cpu",
            "VDT_COORDINATOR_ADDRESS": address,
            "VDT_NUM_PROCESSES": str(num_processes),
            "VDT_PROCESS_ID": str(index),
        }
        if cache_dir:  # later runs of the same programs skip XLA compilation
            env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        args = [sys.executable, "-m", "tests.multihost_worker", f"--workdir={workdir}", f"--data_dir={data_dir}",
                f"--steps={steps}", *extra_args] + [f"--override={k}={v}" for k, v in (overrides or {}).items()]
        log = open(f"{workdir}.{index}.log", "w")
        processes.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return processes


def finish(processes: list, workdir, timeout: float) -> list[str]:
    """Waits for every worker (killing all of them on timeout); returns their logs; asserts exit status 0."""
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    try:
        for p in processes:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [open(f"{workdir}.{i}.log").read() for i in range(len(processes))]
    for i, (p, log) in enumerate(zip(processes, logs)):
        assert p.returncode == 0, f"worker {i} exited with {p.returncode}:\n{log[-4000:]}"
    return logs


def read_records(workdir) -> list[list[dict]]:
    """Per process, the records of every run in `workdir` (see `run`)."""
    directory = os.path.join(workdir, "reads")
    files = sorted(os.listdir(directory))
    return [[json.loads(line) for line in open(os.path.join(directory, f))] for f in files]

"""Preemption: SIGTERM mid-run -> one agreed checkpoint on every process, a clean exit, an exact resume.

The main test runs two processes (2 x 4 CPU devices, `jax.distributed` on
127.0.0.1) like tests/test_distributed.py, sends SIGTERM to process 1 only, and
checks that both saved the same step and exited with status 0; then it runs
the same command again and checks that training resumed from that step and
that the data stream continued where it stopped on each process. The other
tests cover the single-process SIGTERM path through the loop and the pieces.
"""

from __future__ import annotations

import os
import signal
import time

import jax
import numpy as np
import pytest

from tests import multihost_worker as worker
from tests.fakes import ArrayTask, tiny_config
from vdt_jax import checkpointing
from vdt_jax.data import images
from vdt_jax.train import loop, preemption
from vdt_jax.train import mesh as mesh_lib

STEPS = 8  # the same programs as tests/test_distributed.py: compiled once, cached
RUN = {"model.conv_impl": "conv3d", "checkpoint_every_steps": 100}  # no periodic save near the agreed step


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    images.prepare_dataset(worker.tiny_pretrain_config(directory, STEPS).data)
    return directory


def _wait_for(path, text: str, processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.05)
    for p in processes:
        p.kill()
    raise AssertionError(f"never saw {text!r} in {path}:\n{open(path).read()[-3000:] if os.path.exists(path) else ''}")


def test_sigterm_on_one_process_saves_an_agreed_step_on_all_and_the_rerun_resumes(tmp_path, tmp_path_factory, data_dir):
    workdir = tmp_path / "run"
    cache = tmp_path_factory.getbasetemp() / "jax_cache"
    processes = worker.launch(workdir, data_dir, STEPS, cache_dir=cache, overrides=RUN)
    _wait_for(f"{workdir}.0.log", f"step       2/{STEPS}", processes, timeout=420)  # training is under way
    os.kill(processes[1].pid, signal.SIGTERM)
    logs = worker.finish(processes, workdir, timeout=240)  # asserts exit status 0 on both

    first = [runs[0] for runs in worker.read_records(workdir)]
    agreed = first[0]["preempted_at"]
    assert [r.get("preempted_at") for r in first] == [agreed, agreed]  # the same step on both processes
    assert 2 < agreed < STEPS
    assert all(len(r["train"]) == agreed * 8 for r in first)  # stopped right after that step
    ckpt = checkpointing.Checkpointer(str(workdir), every_steps=100, keep=3)
    assert ckpt.latest_step() == agreed
    ckpt.close()
    data = os.listdir(workdir / "checkpoints" / str(agreed) / "data")
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data)  # every process wrote its part
    assert f"Preemption notice: preempted: saved step {agreed}" in logs[0] and "run the same command" in logs[0]
    assert "Traceback" not in logs[0] + logs[1]

    processes = worker.launch(workdir, data_dir, STEPS, cache_dir=cache, overrides=RUN)  # the same command
    logs = worker.finish(processes, workdir, timeout=420)
    assert f"Resumed from {workdir / 'checkpoints'}/{agreed} (step {agreed})" in logs[0]
    second = [runs[1] for runs in worker.read_records(workdir)]
    assert all("preempted_at" not in r and r["metrics"]["num_examples"] == 100 for r in second)
    # Each process's data stream continued exactly where it stopped.
    for index, (before, after) in enumerate(zip(first, second)):
        assert before["train"] + after["train"] == _stream(data_dir, index, STEPS)
    variables, _ = checkpointing.load_variables(str(workdir))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))
    assert checkpointing.Checkpointer(str(workdir), every_steps=100, keep=3).latest_step() == STEPS


def _stream(data_dir, process_index: int, steps: int) -> list[str]:
    """The file names process `process_index` of 2 reads in `steps` uninterrupted steps."""
    config = worker.tiny_pretrain_config(data_dir, steps)
    loader = images.train_loader(
        config.data, seed=config.seed, per_process_batch=8, process_index=process_index, process_count=2,
        keep_file_name=True,
    )  # fmt: skip
    batches = iter(loader)
    return [name for _ in range(steps) for name in worker._names(next(batches)["file_name"])]


def test_signal_mode_agrees_across_processes_at_the_next_check(tmp_path):
    """Without JAX's preemption service, the flag of the one signalled process reaches all via an all-gather."""
    workdir = tmp_path / "probe"
    processes = worker.launch(workdir, "", 0, devices_per_process=1, extra_args=("--probe_signal_mode",))
    worker.finish(processes, workdir, timeout=120)
    records = [runs[-1] for runs in worker.read_records(workdir)]
    # Process 1 was signalled at step 4; flags are compared every 3 steps: both stop at 6.
    assert [(r["agreed"], r["signalled"]) for r in records] == [(6, False), (6, True)]


def test_sigterm_in_a_single_process_run_saves_that_step_and_exits_cleanly(tmp_path, monkeypatch):
    config = tiny_config(num_train_steps=5, checkpoint_every_steps=100, log_every_steps=1)
    config.model.update(conv_impl="conv3d", widths=(8, 8, 8, 8))  # quicker to compile
    served = []

    def signal_during_step_3(batch, mesh, original=mesh_lib.global_batch):
        served.append(1)
        if len(served) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as the scheduler would; caught, not fatal
        return original(batch, mesh)

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(mesh_lib, "global_batch", signal_during_step_3)
    with pytest.raises(preemption.Preempted) as stopped:
        loop.train_and_evaluate(config, str(tmp_path), ArrayTask(config))
    assert stopped.value.step == 3 and stopped.value.code == 0  # SystemExit(0): a clean exit
    assert len(served) == 3
    assert checkpointing.Checkpointer(str(tmp_path), every_steps=100, keep=3).latest_step() == 3
    assert signal.getsignal(signal.SIGTERM) == previous  # the loop put the old handler back


def test_watch_in_signal_mode_agrees_at_the_next_step_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with preemption.PreemptionWatch() as watch:
        assert watch.mode == "signal"  # no jax.distributed in this process
        assert not watch.reached_sync_point(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watch.signalled and watch.reached_sync_point(2)
    assert signal.getsignal(signal.SIGTERM) == previous


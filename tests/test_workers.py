"""Tests of vdt_jax.data.workers: grain worker processes never outlive a killed run, and a killed run resumes exactly.

`python -m vdt_jax.pretrain` with data.num_workers=2 is killed with SIGKILL
(as the OOM killer would) in the middle of training. Its worker processes
and multiprocessing's resource tracker must exit within seconds, and running
the same command again must end with the same parameters, bit for bit, as a
run that was never interrupted.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np

from vdt_jax import checkpointing
from vdt_jax.data import workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
ORPHAN_SECONDS = 5.0


def _pretrain(workdir, data_dir, cache_dir, log_path) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "vdt_jax.pretrain", f"--workdir={workdir}",
        "--config.data.name=vdt_shapes/tiny", f"--config.data.data_dir={data_dir}", "--config.data.num_workers=2",
        "--config.data.image_size=16", "--config.data.eval_resize=18",
        "--config.model.widths=(8,8,8,8)", "--config.model.conv_impl=conv3d",
        "--config.batch_size=8", "--config.eval_batch_size=50",
        f"--config.num_train_steps={STEPS}", "--config.log_every_steps=1", "--config.checkpoint_every_steps=2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # fmt: skip
    log = open(log_path, "w")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _children(pid: int) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for_checkpoint_and_step(run, workdir, log_path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, open(log_path).read()[-3000:]
        steps = [int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit()] if (workdir / "checkpoints").exists() else []
        if steps and max(steps) >= 2 and f"step       3/{STEPS}" in open(log_path).read():
            return
        time.sleep(0.2)
    raise AssertionError("training never passed its first periodic checkpoint:\n" + open(log_path).read()[-3000:])


def test_killed_run_leaves_no_workers_and_resumes_bit_identically(tmp_path, data_dir):
    cache = tmp_path / "xla_cache"
    straight = _pretrain(tmp_path / "straight", data_dir, cache, tmp_path / "straight.log")
    assert straight.wait(timeout=900) == 0, open(tmp_path / "straight.log").read()[-3000:]

    workdir = tmp_path / "killed"
    run = _pretrain(workdir, data_dir, cache, tmp_path / "killed.log")
    _wait_for_checkpoint_and_step(run, workdir, tmp_path / "killed.log")
    children = _children(run.pid)
    assert len(children) >= 2  # the two grain workers (and multiprocessing's resource tracker)
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = time.monotonic()
    while any(_alive(pid) for pid in children) and time.monotonic() - killed_at < 30:
        time.sleep(0.05)
    seconds = time.monotonic() - killed_at
    assert not any(_alive(pid) for pid in children), f"still running 30 s after the kill: {children}"
    assert seconds < ORPHAN_SECONDS, f"the orphaned workers took {seconds:.1f} s to exit"
    print(f"{len(children)} child processes exited {seconds:.2f} s after the main process was killed")

    rerun = _pretrain(workdir, data_dir, cache, tmp_path / "rerun.log")
    assert rerun.wait(timeout=900) == 0, open(tmp_path / "rerun.log").read()[-3000:]
    assert "Resumed from" in open(tmp_path / "rerun.log").read()
    a, _ = checkpointing.load_variables(str(tmp_path / "straight"), step=STEPS)
    b, _ = checkpointing.load_variables(str(workdir), step=STEPS)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _worker_state(pickled: bytes, results) -> None:
    pickle.loads(pickled)  # as grain unpickles the pipeline in each worker
    watching = any(thread.name == "vdt-watch-parent" for thread in threading.enumerate())
    results.put((signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, watching))


def test_the_set_up_runs_where_the_pipeline_is_unpickled_in_a_worker_and_nowhere_else(monkeypatch):
    context = multiprocessing.get_context("spawn")  # how grain starts its workers
    results = context.Queue()
    worker = context.Process(target=_worker_state, args=(pickle.dumps(workers.SetUpWorker()), results))
    worker.start()
    assert results.get(timeout=120) == (True, True)  # SIGTERM ignored, parent watched
    worker.join()
    calls = []
    monkeypatch.setattr(workers, "set_up_this_worker", lambda: calls.append(1))
    copy.deepcopy(pickle.loads(pickle.dumps(workers.SetUpWorker())))  # in the main process: nothing
    assert calls == [] and signal.getsignal(signal.SIGTERM) != signal.SIG_IGN
    assert workers.SetUpWorker().map({"x": 1}) == {"x": 1}


def test_a_worker_whose_parent_dies_exits_within_a_second(tmp_path):
    """A process (the 'main') starts a child that watches it; SIGKILL the main, the child is gone."""
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import os, time\\nfrom vdt_jax.data import workers\\nworkers.watch_parent(os.getppid(), 0.1)\\n"
        "print(os.getpid(), flush=True)\\ntime.sleep(60)'], stdout=subprocess.PIPE, text=True)\n"
        "print(child.stdout.readline().strip(), flush=True)\n"
        "time.sleep(60)\n"
    )
    main = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": REPO},
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(main.stdout.readline())
    assert _alive(child)
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)
